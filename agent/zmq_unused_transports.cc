// The agent links Debian's static libzmq (libzmq.a) instead of libzmq.so.5: Debian builds libzmq
// with the PGM, NORM and GSSAPI transports, and the shared library makes every process that
// loads it map libpgm, libnorm, the Kerberos/GSSAPI stack and libbsd (~1.2 MiB of the idle
// agent's resident set, docs/BENCHMARKS.md figure 5). The agent speaks only tcp:// with
// CURVE, so it never reaches that code.
// The archive's objects still name those libraries' functions; they are defined here to fail
// (an error code, an invalid handle) without doing anything. libzmq treats a PGM or NORM socket
// it cannot open as fatal (an assertion in session_base.cpp aborts the process: checked with a
// pgm:// and a norm:// connect), which is why the agent's config refuses every endpoint that is
// not tcp:// (AgentConfigParser.CoordinatorEndpointsAreTcp) and the agent connects nowhere else.
// Initialising PGM, which every zmq context does, succeeds and does nothing.
// Only gantry-agent is linked this way (agent/CMakeLists.txt, option GANTRY_AGENT_STATIC_ZMQ);
// the coordinator and the CLI keep the shared library.
//
// Trade-off, written down in README.md: a security update of Debian's libzmq5 reaches the agent
// when the agent is rebuilt, not when the package is upgraded.

#include <cerrno>
#include <cstddef>
#include <cstring>

#define restrict __restrict__
#include <pgm/pgm.h>
#undef restrict
#include <gssapi/gssapi.h>
#include <normApi.h>

extern "C" {

// --- libbsd (libzmq calls strlcpy when it copies interface and socket names) ---
size_t strlcpy(char* dst, const char* src, size_t size) {
  const size_t len = std::strlen(src);
  if (size > 0) {
    const size_t n = len < size - 1 ? len : size - 1;
    std::memcpy(dst, src, n);
    dst[n] = '\0';
  }
  return len;
}

// --- OpenPGM: initialising succeeds (every zmq context does it); every PGM socket fails ---
static pgm_error_t no_pgm = {PGM_ERROR_DOMAIN_IF, PGM_ERROR_NODEV, const_cast<char*>("PGM is not built into gantry-agent")};

bool pgm_init(pgm_error_t**) { return true; }
bool pgm_shutdown(void) { return true; }
void pgm_error_free(pgm_error_t*) {}
void pgm_free(void*) {}
void pgm_freeaddrinfo(struct pgm_addrinfo_t*) {}
bool pgm_getaddrinfo(const char*, const struct pgm_addrinfo_t* const, struct pgm_addrinfo_t** res, pgm_error_t** error) {
  if (res) *res = nullptr;
  if (error) *error = &no_pgm;
  errno = EINVAL;
  return false;
}
bool pgm_socket(pgm_sock_t** sock, const sa_family_t, const int, const int, pgm_error_t** error) {
  if (sock) *sock = nullptr;
  if (error) *error = &no_pgm;
  errno = EINVAL;
  return false;
}
bool pgm_bind3(pgm_sock_t*, const struct pgm_sockaddr_t* const, const socklen_t, const struct pgm_interface_req_t* const,
               const socklen_t, const struct pgm_interface_req_t* const, const socklen_t, pgm_error_t** error) {
  if (error) *error = &no_pgm;
  return false;
}
bool pgm_connect(pgm_sock_t*, pgm_error_t** error) {
  if (error) *error = &no_pgm;
  return false;
}
bool pgm_close(pgm_sock_t*, bool) { return false; }
bool pgm_setsockopt(pgm_sock_t* const, const int, const int, const void*, const socklen_t) { return false; }
bool pgm_getsockopt(pgm_sock_t* const, const int, const int, void*, socklen_t*) { return false; }
int pgm_send(pgm_sock_t* const, const void*, const size_t, size_t*) { return PGM_IO_STATUS_ERROR; }
int pgm_recvmsgv(pgm_sock_t* const, struct pgm_msgv_t* const, const size_t, const int, size_t*, pgm_error_t** error) {
  if (error) *error = &no_pgm;
  return PGM_IO_STATUS_ERROR;
}
bool pgm_gsi_create_from_data(pgm_gsi_t*, const uint8_t*, const size_t) { return false; }

// --- NORM: no instance can be created, so no session, stream or event exists ---
const NormInstanceHandle NORM_INSTANCE_INVALID = nullptr;
const NormSessionHandle NORM_SESSION_INVALID = nullptr;
const NormObjectHandle NORM_OBJECT_INVALID = nullptr;
const NormNodeId NORM_NODE_ANY = 0xffffffff;

NormInstanceHandle NormCreateInstance(bool) {
  errno = EINVAL;
  return NORM_INSTANCE_INVALID;
}
void NormDestroyInstance(NormInstanceHandle) {}
void NormStopInstance(NormInstanceHandle) {}
bool NormGetNextEvent(NormInstanceHandle, NormEvent*, bool) { return false; }
NormDescriptor NormGetDescriptor(NormInstanceHandle) { return -1; }
NormSessionHandle NormCreateSession(NormInstanceHandle, const char*, UINT16, NormNodeId) { return NORM_SESSION_INVALID; }
void NormDestroySession(NormSessionHandle) {}
bool NormIsUnicastAddress(const char*) { return false; }
void NormSetRxPortReuse(NormSessionHandle, bool, const char*, const char*, UINT16) {}
bool NormSetMulticastInterface(NormSessionHandle, const char*) { return false; }
bool NormSetTTL(NormSessionHandle, unsigned char) { return false; }
bool NormSetLoopback(NormSessionHandle, bool) { return false; }
NormSessionId NormGetRandomSessionId() { return 0; }
bool NormStartSender(NormSessionHandle, NormSessionId, UINT32, UINT16, UINT16, UINT16, UINT8) { return false; }
void NormStopSender(NormSessionHandle) {}
void NormSetCongestionControl(NormSessionHandle, bool, bool) {}
NormObjectHandle NormStreamOpen(NormSessionHandle, UINT32, const char*, unsigned int) { return NORM_OBJECT_INVALID; }
const void* NormObjectGetUserData(NormObjectHandle) { return nullptr; }
void NormObjectSetUserData(NormObjectHandle, const void*) {}
unsigned int NormStreamWrite(NormObjectHandle, const char*, unsigned int) { return 0; }
void NormStreamFlush(NormObjectHandle, bool, NormFlushMode) {}
bool NormStartReceiver(NormSessionHandle, UINT32) { return false; }
void NormStopReceiver(NormSessionHandle) {}
void NormSetDefaultUnicastNack(NormSessionHandle, bool) {}
void NormSetDefaultSyncPolicy(NormSessionHandle, NormSyncPolicy) {}
bool NormStreamRead(NormObjectHandle, char*, unsigned int*) { return false; }
bool NormStreamSeekMsgStart(NormObjectHandle) { return false; }
NormObjectType NormObjectGetType(NormObjectHandle) { return NORM_OBJECT_NONE; }
void NormNodeDelete(NormNodeHandle) {}

// --- GSSAPI: the mechanism is only chosen by ZMQ_GSSAPI_* options, which gantry never sets ---
gss_OID GSS_C_NT_HOSTBASED_SERVICE = nullptr;
gss_OID GSS_C_NT_USER_NAME = nullptr;

#define GANTRY_NO_GSS(minor) \
  do {                       \
    if (minor) *(minor) = 0; \
    return GSS_S_FAILURE;    \
  } while (0)

OM_uint32 gss_accept_sec_context(OM_uint32* minor, gss_ctx_id_t*, gss_cred_id_t, gss_buffer_t, gss_channel_bindings_t,
                                 gss_name_t*, gss_OID*, gss_buffer_t, OM_uint32*, OM_uint32*, gss_cred_id_t*) {
  GANTRY_NO_GSS(minor);
}
OM_uint32 gss_acquire_cred(OM_uint32* minor, gss_name_t, OM_uint32, gss_OID_set, gss_cred_usage_t, gss_cred_id_t*,
                           gss_OID_set*, OM_uint32*) {
  GANTRY_NO_GSS(minor);
}
OM_uint32 gss_delete_sec_context(OM_uint32* minor, gss_ctx_id_t*, gss_buffer_t) { GANTRY_NO_GSS(minor); }
OM_uint32 gss_display_name(OM_uint32* minor, gss_name_t, gss_buffer_t, gss_OID*) { GANTRY_NO_GSS(minor); }
OM_uint32 gss_import_name(OM_uint32* minor, gss_buffer_t, gss_OID, gss_name_t*) { GANTRY_NO_GSS(minor); }
OM_uint32 gss_init_sec_context(OM_uint32* minor, gss_cred_id_t, gss_ctx_id_t*, gss_name_t, gss_OID, OM_uint32, OM_uint32,
                               gss_channel_bindings_t, gss_buffer_t, gss_OID*, gss_buffer_t, OM_uint32*, OM_uint32*) {
  GANTRY_NO_GSS(minor);
}
OM_uint32 gss_release_buffer(OM_uint32* minor, gss_buffer_t) { GANTRY_NO_GSS(minor); }
OM_uint32 gss_release_cred(OM_uint32* minor, gss_cred_id_t*) { GANTRY_NO_GSS(minor); }
OM_uint32 gss_release_name(OM_uint32* minor, gss_name_t*) { GANTRY_NO_GSS(minor); }
OM_uint32 gss_unwrap(OM_uint32* minor, gss_ctx_id_t, gss_buffer_t, gss_buffer_t, int*, gss_qop_t*) { GANTRY_NO_GSS(minor); }
OM_uint32 gss_wrap(OM_uint32* minor, gss_ctx_id_t, int, gss_qop_t, gss_buffer_t, int*, gss_buffer_t) { GANTRY_NO_GSS(minor); }

#undef GANTRY_NO_GSS
}  // extern "C"
