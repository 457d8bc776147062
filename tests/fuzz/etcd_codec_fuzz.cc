// The etcd store's decoders (coordinator/store/etcd_codec.h) on arbitrary stored values: every
// value etcd hands back is hostile. The first byte picks the row kind, the rest is the value.
// Nothing may throw or crash; what decodes must encode to a value that decodes to the same
// encoding (a row read back and written again is stable).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "coordinator/store/etcd_codec.h"
#include "coordinator/store/etcd_keys.h"

namespace c = gantry::store::etcd_codec;

namespace {

template <typename Decode>
void stable(const std::string& key, const std::string& value, Decode decode) {
  auto row = decode(key, value);
  if (!row) return;
  const std::string once = c::encode(*row);
  auto again = decode(key, once);
  if (!again || c::encode(*again) != once) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string value(reinterpret_cast<const char*>(data) + 1, size - 1);
  const std::string key = gantry::store::etcd_keys::Layout{"/gantry/"}.host(value.substr(0, 64));
  for (char ch : gantry::store::etcd_keys::escape(value)) {
    const bool ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' ||
                    ch == '_' || ch == '-' || ch == '%';
    if (!ok) std::abort();  // an escaped name never holds '/' or a byte outside the set
  }
  switch (data[0] % 14) {
    case 0:
      stable(key, value, c::decode_counters);
      break;
    case 1:
      stable(key, value, c::decode_host);
      break;
    case 2:
      stable(key, value, c::decode_release);
      break;
    case 3:
      stable(key, value, c::decode_rollout);
      break;
    case 4:
      stable(key, value, c::decode_order_group);
      break;
    case 5:
      stable(key, value, c::decode_result_group);
      break;
    case 6:
      stable(key, value, c::decode_timeline_group);
      break;
    case 7:
      stable(key, value, c::decode_event_group);
      break;
    case 8:
      stable(key, value, c::decode_audit);
      break;
    case 9:
      stable(key, value, c::decode_desired);
      break;
    case 10:
      stable(key, value, c::decode_agent_key);
      break;
    case 11:
      stable(key, value, c::decode_operator_key);
      break;
    case 12: {
      auto plan = c::decode_slot_plan(key, value);
      if (!plan) break;
      std::vector<std::string> texts;
      for (const auto& j : *plan) texts.push_back(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
      auto again = c::decode_slot_plan(key, c::encode_slot_plan(texts));
      if (!again || again->size() != plan->size()) std::abort();  // a plan read back and written again is stable
      break;
    }
    default: {
      auto j = c::decode_slot(key, value);
      if (j) (void)j->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    }
  }
  return 0;
}
