// Bytes through the agent's report and journal path, to disk and back.
//
// Covers: proto::decode, then what the agent journals from a decoded message, with the real
// FileStateStore in a temp dir under $TMPDIR (/tmp when unset), built once per process, so
// saves append journal records and now and then take a snapshot. A Report is added to the
// results as the agent adds its own; an Order becomes the report of a refused order (its ids
// and a message naming its version and service, as Agent::on_order writes when a release is
// refused) and, when nothing is active, the active order with the order's manifest as its
// failure text (the text a probe or an archive may put there), phase reverting; when an order
// is active it is cleared instead. Every input saves (save and save_lazy in turn), then a
// second FileStateStore loads the same directory: the load must succeed and serialize to
// exactly what was saved; the report is encoded as the agent sends it and must decode again.
// An exception or a mismatch is a crash here.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "agent/state/state_store.h"
#include "common/protocol/codec.h"
#include "common/util/log.h"

namespace {

using namespace gantry;

struct World {
  std::string dir;
  agent::AgentState state;
  std::unique_ptr<agent::FileStateStore> store;
  uint64_t inputs = 0;

  World() {
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/gantry-fuzz-journal-XXXXXX";
    if (!mkdtemp(tmpl.data())) std::abort();
    dir = tmpl;
    store = std::make_unique<agent::FileStateStore>(dir);
    auto loaded = store->load();
    if (!loaded) std::abort();
    state = std::move(*loaded);
  }
};

World* world = nullptr;

[[noreturn]] void fail(const std::string& what) {
  fprintf(stderr, "agent_journal: %s\n", what.c_str());
  std::abort();
}

// The report goes out as the agent sends it: it must encode and decode to a Report.
void send_check(const proto::Report& r) {
  auto back = proto::decode(proto::encode(r));
  if (!back || !std::holds_alternative<proto::Report>(*back)) fail("a journaled report does not survive the wire");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  gantry::log::setup("fuzz", "off");
  world = new World();
  // The temp dir goes when the run ends (a crash leaves it, with the state it crashed in).
  std::atexit([] {
    std::error_code ec;
    std::filesystem::remove_all(world->dir, ec);
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  World& w = *world;
  auto msg = proto::decode(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!msg) return 0;
  if (const auto* r = std::get_if<proto::Report>(&*msg)) {
    w.state.add_result(*r);
    send_check(*r);
  } else if (const auto* o = std::get_if<proto::Order>(&*msg)) {
    proto::Report r{o->order_id, o->rollout_id,
                    o->service,  "failed",
                    "",          "refused release " + o->version + " of " + o->service + ": " + o->manifest,
                    {}};
    w.state.add_result(r);
    send_check(r);
    if (!w.state.active) {
      agent::ActiveOrder a;
      a.order = *o;
      a.phase = agent::phase::kReverting;
      a.failure = o->manifest;
      a.timings_ms["fetch"] = size;
      w.state.active = std::move(a);
    } else {
      w.state.active.reset();
    }
  } else {
    return 0;
  }
  const bool lazy = (++w.inputs % 2) == 0;
  Status st = lazy ? w.store->save_lazy(w.state) : w.store->save(w.state);
  if (!st.ok()) fail("save: " + st.error().message);
  agent::FileStateStore reader(w.dir);
  auto loaded = reader.load();
  if (!loaded) fail("load after save: " + loaded.error().message);
  if (agent::serialize_state(*loaded) != agent::serialize_state(w.state))
    fail("the journal read back differs from what was saved");
  return 0;
}
