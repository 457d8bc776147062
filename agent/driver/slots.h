// Start-first for binary services (README "Rolling without downtime", "Start-first"): a service
// that can run two instances side by side has two slots, each a name and a port. The live
// instance runs in one slot; an update starts the new release in the other, verifies it there,
// gives it traffic and only then stops the old one. Each slot's release is the symlink
// `<root>/slots/<name> -> ../releases/<version>`; `current` still names the release the service
// runs (it follows the new release once verified). This file holds the pure parts (parsing,
// placeholders, which slot is live) and the interface the engine drives the slots through.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/util/expected.h"

namespace gantry::agent {

struct Slot {
  std::string name;  // [a-z0-9_-], 1..16 characters
  int port = 0;      // where the slot's instance listens (probes, load balancer)
};

// Parses `slots = NAME:PORT NAME:PORT`: exactly two slots, distinct names and ports.
Expected<std::vector<Slot>> parse_slots(const std::string& text);

// `text` with every `{slot}` replaced by the slot's name and `{port}` by its port.
std::string with_slot(const std::string& text, const Slot& slot);
// True when `text` names `{slot}` or `{port}`.
bool names_slot(const std::string& text);

// What `<root>/slots/<name>` points at, per slot ("" when the link does not exist), and when
// the link was made (ns since the epoch; for a tie only).
struct SlotLink {
  std::string version;
  int64_t made_ns = 0;
};

// The slot the live instance runs in: the one whose link names `current`; when both do (the
// same release in both, left by an order that could not stop the old instance), the one linked
// last. "" when none names it (nothing installed start-first yet).
std::string choose_live_slot(const std::vector<Slot>& slots, const std::vector<SlotLink>& links,
                             const std::string& current);
// The slot a new release starts in: the one that is not `live` (the first when none is).
std::string next_slot(const std::vector<Slot>& slots, const std::string& live);
// The other slot of the two.
std::string other_slot(const std::vector<Slot>& slots, const std::string& name);

// The slot operations of a driver (the binary driver with start_order = start-first).
class SlotDriver {
 public:
  virtual ~SlotDriver() = default;
  virtual const std::vector<Slot>& slots() const = 0;
  // The live slot, from disk ("" when none).
  virtual Expected<std::string> live_slot() = 0;
  // The version slot `name` is linked to ("" when not linked).
  virtual Expected<std::string> slot_version(const std::string& name) = 0;
  // Points slot `name` at release `version` (rename(2) of its link, the dir fsynced).
  virtual Status link_slot(const std::string& name, const std::string& version) = 0;
  // Removes slot `name`'s link (its instance is stopped); absent already is fine.
  virtual Status unlink_slot(const std::string& name) = 0;
  // Runs the start command for slot `name` (its link names `version`): starts the instance.
  virtual Status start_slot(const std::string& name, const std::string& version) = 0;
  // Runs the stop command for slot `name`; succeeds when nothing runs there.
  virtual Status stop_slot(const std::string& name, const std::string& version) = 0;
};

}  // namespace gantry::agent
