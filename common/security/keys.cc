#include "common/security/keys.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "common/util/fs.h"

namespace gantry::security {
namespace {

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ' || s.back() == '\t')) s.pop_back();
  size_t i = 0;
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
  return s.substr(i);
}

// Creates `path` exclusively with `mode` and writes `data`, fsynced.
Status write_new_file(const std::string& path, const std::string& data, mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) {
    if (errno == EEXIST) return make_error("exists", path + " already exists; not overwriting a key");
    return make_error("io", "create " + path + ": " + std::strerror(errno));
  }
  ::fchmod(fd, mode);  // umask must not loosen or tighten what we promise
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(fd);
      ::unlink(path.c_str());
      return make_error("io", "write " + path + ": " + std::strerror(e));
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) return make_error("io", "fsync " + path + ": " + std::strerror(errno));
  return fs::fsync_dir(fs::dirname(path));
}

// Reads a secret key file, refusing one that others may read (like ssh does).
Expected<std::string> read_secret_file(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0)
    return make_error("io", "cannot read key file " + path + ": " + std::strerror(errno));
  if (st.st_mode & 077) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%03o", static_cast<unsigned>(st.st_mode & 0777));
    return make_error("permissions", "secret key file " + path + " is readable by group or others (mode " + mode +
                                         "); run chmod 600 on it");
  }
  auto data = fs::read_file(path, 4096);
  if (!data) return data.error();
  return trim(*data);
}

}  // namespace

bool is_z85_key(const std::string& s) {
  if (s.size() != 40) return false;
  uint8_t raw[32];
  return zmq_z85_decode(raw, s.c_str()) != nullptr;
}

Expected<CurveKeyPair> generate_curve_keypair() {
  char pub[41] = {}, sec[41] = {};
  if (zmq_curve_keypair(pub, sec) != 0)
    return make_error("curve", std::string("zmq_curve_keypair: ") + zmq_strerror(zmq_errno()));
  return CurveKeyPair{pub, sec};
}

Status write_curve_keypair(const std::string& prefix, const CurveKeyPair& kp) {
  const std::string key = prefix + ".key", pub = prefix + ".pub";
  if (fs::exists(key)) return make_error("exists", key + " already exists; not overwriting a key");
  if (fs::exists(pub)) return make_error("exists", pub + " already exists; not overwriting a key");
  if (Status s = write_new_file(key, kp.secret_z85 + "\n", 0600); !s.ok()) return s;
  return write_new_file(pub, kp.public_z85 + "\n", 0644);
}

Expected<CurveKeyPair> read_curve_secret(const std::string& path) {
  auto text = read_secret_file(path);
  if (!text) return text.error();
  if (!is_z85_key(*text)) return make_error("key", path + " does not hold a Z85 CURVE secret key (40 characters)");
  char pub[41] = {};
  if (zmq_curve_public(pub, text->c_str()) != 0) return make_error("key", path + ": cannot derive the public key");
  return CurveKeyPair{pub, *text};
}

Expected<std::string> read_curve_public(const std::string& path) {
  auto data = fs::read_file(path, 4096);
  if (!data) return make_error("io", "cannot read public key file " + path + ": " + data.error().message);
  std::string k = trim(*data);
  if (!is_z85_key(k)) return make_error("key", path + " does not hold a Z85 CURVE public key (40 characters)");
  return k;
}

void init_sodium() {
  static const bool ready = [] {
    if (sodium_init() < 0) std::abort();
    return true;
  }();
  (void)ready;
}

std::string to_hex(const std::string& bytes) {
  std::string out(bytes.size() * 2 + 1, '\0');
  sodium_bin2hex(out.data(), out.size(), reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
  out.pop_back();
  return out;
}

Expected<std::string> from_hex(const std::string& hex, size_t bytes) {
  if (hex.size() != bytes * 2) return make_error("hex", "expected " + std::to_string(bytes * 2) + " hex digits");
  std::string out(bytes, '\0');
  size_t len = 0;
  const char* end = nullptr;
  if (sodium_hex2bin(reinterpret_cast<unsigned char*>(out.data()), bytes, hex.data(), hex.size(), nullptr, &len,
                     &end) != 0 ||
      len != bytes || end != hex.data() + hex.size())
    return make_error("hex", "not valid hex");
  return out;
}

Expected<SigningKeyPair> generate_signing_keypair() {
  init_sodium();
  unsigned char pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
  crypto_sign_keypair(pk, sk);
  SigningKeyPair kp{std::string(reinterpret_cast<char*>(pk), sizeof pk),
                    std::string(reinterpret_cast<char*>(sk), sizeof sk)};
  sodium_memzero(sk, sizeof sk);
  return kp;
}

Status write_signing_keypair(const std::string& prefix, const SigningKeyPair& kp) {
  const std::string key = prefix + ".key", pub = prefix + ".pub";
  if (fs::exists(key)) return make_error("exists", key + " already exists; not overwriting a key");
  if (fs::exists(pub)) return make_error("exists", pub + " already exists; not overwriting a key");
  if (Status s = write_new_file(key, "ed25519-secret " + to_hex(kp.secret_key) + "\n", 0600); !s.ok()) return s;
  return write_new_file(pub, "ed25519-public " + to_hex(kp.public_key) + "\n", 0644);
}

Expected<SigningKeyPair> read_signing_secret(const std::string& path) {
  auto text = read_secret_file(path);
  if (!text) return text.error();
  const std::string tag = "ed25519-secret ";
  if (text->rfind(tag, 0) != 0)
    return make_error("key", path + " is not an ed25519 release signing key (gantry release keygen)");
  auto raw = from_hex(text->substr(tag.size()), crypto_sign_SECRETKEYBYTES);
  if (!raw) return make_error("key", path + ": " + raw.error().message);
  SigningKeyPair kp;
  kp.secret_key = *raw;
  unsigned char pk[crypto_sign_PUBLICKEYBYTES];
  crypto_sign_ed25519_sk_to_pk(pk, reinterpret_cast<const unsigned char*>(kp.secret_key.data()));
  kp.public_key.assign(reinterpret_cast<char*>(pk), sizeof pk);
  return kp;
}

Expected<std::string> read_signing_public(const std::string& path) {
  auto data = fs::read_file(path, 4096);
  if (!data) return make_error("io", "cannot read release public key " + path + ": " + data.error().message);
  std::string text = trim(*data);
  const std::string tag = "ed25519-public ";
  if (text.rfind(tag, 0) != 0)
    return make_error("key", path + " is not an ed25519 release public key (gantry release keygen)");
  auto raw = from_hex(text.substr(tag.size()), crypto_sign_PUBLICKEYBYTES);
  if (!raw) return make_error("key", path + ": " + raw.error().message);
  return *raw;
}

int curve_keygen_main(const std::string& program, const std::vector<std::string>& args) {
  std::string out;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--out" && i + 1 < args.size())
      out = args[++i];
    else if (args[i].rfind("--out=", 0) == 0)
      out = args[i].substr(6);
    else if (args[i] == "--help" || args[i] == "-h") {
      std::cout << "Usage: " << program << " keygen --out PREFIX\n\n"
                << "Writes a CurveZMQ keypair: PREFIX.key (secret, mode 0600; never copy it off this machine)\n"
                << "and PREFIX.pub (public; hand it to whoever must trust this key).\n";
      return 0;
    } else {
      std::cerr << program << " keygen: unexpected argument '" << args[i] << "' (usage: " << program
                << " keygen --out PREFIX)\n";
      return 2;
    }
  }
  if (out.empty()) {
    std::cerr << program << " keygen: --out PREFIX is required\n";
    return 2;
  }
  auto kp = generate_curve_keypair();
  if (!kp) {
    std::cerr << program << " keygen: " << kp.error().message << "\n";
    return 1;
  }
  if (Status s = write_curve_keypair(out, *kp); !s.ok()) {
    std::cerr << program << " keygen: " << s.error().message << "\n";
    return 1;
  }
  std::cout << "wrote " << out << ".key (secret, 0600) and " << out << ".pub (public: " << kp->public_z85 << ")\n";
  return 0;
}

}  // namespace gantry::security
