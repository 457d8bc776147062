// Who may talk to the coordinator: the agent and operator key allowlists (kept in the store),
// the ZAP decisions made from them, and the per-message lookups that make a revocation take
// effect at the revoked key's next message rather than at its next handshake.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/util/clock.h"
#include "common/util/expected.h"
#include "coordinator/store/store.h"

namespace gantry::coordinator {

// ZAP domains of the coordinator's three server sockets.
constexpr const char* kZapDomainAgents = "gantry-agent";
constexpr const char* kZapDomainPub = "gantry-pub";
constexpr const char* kZapDomainOperators = "gantry-operator";

// kPeer is not above or below the others: another coordinator of the installation (it holds the
// shared server keypair), allowed the commands the table marks for peers and nothing else.
enum class Role { kPeer = 0, kViewer = 1, kDeployer = 2, kAdmin = 3 };
// An operator key's role: viewer, deployer or admin ("peer" is no operator key's).
std::optional<Role> parse_role(const std::string& s);
const char* role_name(Role r);

// A ZAP answer. user_id is the client's public key (Z85): the loop resolves it per message.
struct ZapDecision {
  bool allow = false;
  std::string user_id;
  std::string reason;  // for the log and the ZAP status text
};

// How an agent key stands right now.
struct AgentStanding {
  enum Kind { kAccepted, kPending, kRefused } kind = kRefused;
  std::string host_id;  // bound host (accepted); empty for a pending key (see KeyRing::accept)
  std::string state;    // the stored state, or "unknown"
};

// What an admin command changed, for the reply, the audit log and the coordinator's follow-up.
struct KeyChange {
  std::vector<store::AgentKeyRow> agents;  // rows after the change
  std::optional<store::OperatorKeyRow> op;
  std::string summary;
  // Hosts whose accepted key lost its standing in this change: their connections must stop
  // counting. A pending key that merely claimed a host's name never disconnects that host.
  std::vector<std::string> hosts_to_disconnect;
};

class KeyRing {
 public:
  // Pending keys beyond this are refused at the handshake (a flood of fresh keys cannot fill the store).
  static constexpr size_t kMaxPending = 1000;

  KeyRing(store::Store& store, const Clock& clock);

  // Loads both allowlists from the store.
  Status load();
  // Bootstrap from the command line: the key is accepted for `host` / active as admin `name`.
  // A key an admin has rejected or revoked stays so: the flag is refused (error code
  // "revoked") and only an explicit `gantry keys accept` / `keys add-operator` undoes it.
  Status bootstrap_agent(const std::string& host, const std::string& key);
  Status bootstrap_operator(const std::string& name, const std::string& key, Role role);

  // The ZAP decision for a CURVE client key (Z85) on `domain`, from the peer's IP `address`.
  // Only accepted agent keys get in. An unknown agent key is recorded as pending (with the
  // address it came from) and refused like every other key that is not accepted, so no peer an
  // operator has not accepted ever gets past the handshake.
  ZapDecision zap(const std::string& domain, const std::string& key, const std::string& address = "");

  // The coordinator's own server public key (Z85; "" without CURVE): a client authenticating
  // with it on the operator socket is a peer coordinator (it holds the installation's shared
  // server keypair) and gets the role peer.
  void set_peer_key(std::string key) { peer_key_ = std::move(key); }
  bool is_peer(const std::string& key) const { return !peer_key_.empty() && key == peer_key_; }

  // Per-message lookups from the User-Id (the key).
  AgentStanding agent(const std::string& key) const;
  // The active operator with this key, or nullptr.
  const store::OperatorKeyRow* op(const std::string& key) const;

  // Admin commands. `target` is a Z85 key or a host id (or, for revoke, an operator name).
  Expected<KeyChange> accept(const std::string& target, const std::string& host, const std::string& by);
  // Pre-enrollment of many hosts at once (`gantry keys accept-file`): each (host, Z85 key) is
  // accepted as `accept(key, host)` would, all in one store transaction, so enrolling a fleet
  // of 10,000 costs one fsync instead of 10,000. Nothing is changed if any entry is invalid.
  Expected<KeyChange> accept_many(const std::vector<std::pair<std::string, std::string>>& host_keys,
                                  const std::string& by);
  Expected<KeyChange> reject(const std::string& target, const std::string& by);
  Expected<KeyChange> revoke(const std::string& target, const std::string& by);
  Expected<KeyChange> add_operator(const std::string& name, const std::string& key, Role role, const std::string& by);

  nlohmann::json to_json() const;
  bool has_admin() const;

 private:
  // One agent key row chosen by key or host (pending first when `pending_only`).
  Expected<store::AgentKeyRow*> find_agent(const std::string& target, const std::vector<std::string>& states);
  Status save(const std::vector<store::AgentKeyRow>& rows);

  store::Store& store_;
  const Clock& clock_;
  std::map<std::string, store::AgentKeyRow> agents_;  // by key
  std::map<std::string, store::OperatorKeyRow> ops_;  // by key
  std::string peer_key_;                              // see set_peer_key
};

}  // namespace gantry::coordinator
