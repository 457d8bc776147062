#include "agent/state/state_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>

#include "common/util/fs.h"
#include "common/util/names.h"

namespace gantry::agent {
namespace {

using nlohmann::json;

struct Corrupt : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string name_or_empty(const json& j, const char* k) {
  std::string v = j.at(k).get<std::string>();
  if (!v.empty() && !is_safe_name(v)) throw Corrupt(std::string("bad name in field ") + k);
  return v;
}

std::string name(const json& j, const char* k) {
  std::string v = name_or_empty(j, k);
  if (v.empty()) throw Corrupt(std::string("empty field ") + k);
  return v;
}

json order_json(const proto::Order& o) {
  json j = {{"order_id", o.order_id},
            {"rollout_id", o.rollout_id},
            {"service", o.service},
            {"kind", o.kind},
            {"version", o.version},
            {"sha256", o.sha256},
            {"size", o.size},
            {"min_healthy_ms", o.min_healthy_ms},
            {"healthy_deadline_ms", o.healthy_deadline_ms}};
  // The signed manifest travels with the order, so a resumed order is checked again.
  if (!o.manifest.empty()) j["manifest"] = o.manifest;
  if (!o.signature.empty()) j["signature"] = o.signature;
  return j;
}

proto::Order order_from(const json& j) {
  proto::Order o;
  o.order_id = name(j, "order_id");
  o.rollout_id = j.at("rollout_id").get<uint64_t>();
  o.service = name(j, "service");
  o.kind = j.at("kind").get<std::string>();
  if (o.kind != "update" && o.kind != "rollback") throw Corrupt("bad order kind");
  o.version = name(j, "version");
  o.sha256 = j.at("sha256").get<std::string>();
  if (!is_sha256_hex(o.sha256)) throw Corrupt("bad sha256");
  o.size = j.at("size").get<uint64_t>();
  o.min_healthy_ms = j.at("min_healthy_ms").get<uint32_t>();
  o.healthy_deadline_ms = j.at("healthy_deadline_ms").get<uint32_t>();
  o.manifest = j.value("manifest", std::string());
  o.signature = j.value("signature", std::string());
  return o;
}

json report_json(const proto::Report& r) {
  return {{"order_id", r.order_id},    {"rollout_id", r.rollout_id},           {"service", r.service},
          {"outcome", r.outcome},      {"running_version", r.running_version}, {"message", r.message},
          {"timings_ms", r.timings_ms}};
}

proto::Report report_from(const json& j) {
  proto::Report r;
  r.order_id = name(j, "order_id");
  r.rollout_id = j.at("rollout_id").get<uint64_t>();
  r.service = name(j, "service");
  r.outcome = j.at("outcome").get<std::string>();
  if (r.outcome != "succeeded" && r.outcome != "failed" && r.outcome != "failed_reverted") throw Corrupt("bad outcome");
  r.running_version = name_or_empty(j, "running_version");
  r.message = j.at("message").get<std::string>();
  r.timings_ms = j.at("timings_ms").get<std::map<std::string, uint64_t>>();
  return r;
}

bool known_phase(const std::string& p) {
  for (const char* k :
       {phase::kFetching, phase::kStaging, phase::kSwapping, phase::kRestarting, phase::kVerifying, phase::kReverting})
    if (p == k) return true;
  return false;
}

}  // namespace

void AgentState::add_result(const proto::Report& r) {
  ++results_added;
  for (auto it = results.begin(); it != results.end(); ++it) {
    if (it->order_id == r.order_id) {
      results.erase(it);
      break;
    }
  }
  results.push_back(r);
  while (results.size() > kMaxResults) results.pop_front();
}

const proto::Report* AgentState::find_result(const std::string& order_id) const {
  for (const auto& r : results)
    if (r.order_id == order_id) return &r;
  return nullptr;
}

namespace {

// Everything but the results: what each service runs, the active order, the queue.
void body_to_json(const AgentState& s, json& j) {
  json svcs = json::object();
  for (const auto& [n, rec] : s.services) svcs[n] = {{"current", rec.current}, {"previous", rec.previous}};
  j["services"] = svcs;
  if (s.active) {
    const auto& a = *s.active;
    j["active"] = {{"order", order_json(a.order)},         {"phase", a.phase},
                   {"from_version", a.from_version},       {"failure", a.failure},
                   {"started_wall_ms", a.started_wall_ms}, {"timings_ms", a.timings_ms}};
    if (!a.slot.empty()) j["active"]["slot"] = a.slot;
  } else {
    j["active"] = nullptr;
  }
  j["queue"] = json::array();
  for (const auto& o : s.queue) j["queue"].push_back(order_json(o));
  // Written once an epoch was seen, so a journal of an agent that never saw one reads as before.
  if (s.highest_epoch != 0) j["epoch"] = s.highest_epoch;
}

// Replaces services, active and queue of `s` with the ones in `j` (throws on bad input).
void body_from_json(const json& j, AgentState& s) {
  s.services.clear();
  for (const auto& [n, rec] : j.at("services").items()) {
    if (!is_safe_name(n)) throw Corrupt("bad service name");
    s.services[n] = ServiceRecord{name_or_empty(rec, "current"), name_or_empty(rec, "previous")};
  }
  s.active.reset();
  if (!j.at("active").is_null()) {
    const auto& a = j.at("active");
    ActiveOrder ao;
    ao.order = order_from(a.at("order"));
    ao.phase = a.at("phase").get<std::string>();
    if (!known_phase(ao.phase)) throw Corrupt("bad phase");
    ao.from_version = name_or_empty(a, "from_version");
    ao.failure = a.at("failure").get<std::string>();
    if (a.contains("slot")) ao.slot = name_or_empty(a, "slot");
    ao.started_wall_ms = a.at("started_wall_ms").get<int64_t>();
    ao.timings_ms = a.at("timings_ms").get<std::map<std::string, uint64_t>>();
    s.active = std::move(ao);
  }
  s.queue.clear();
  for (const auto& o : j.at("queue")) s.queue.push_back(order_from(o));
  s.highest_epoch = 0;
  if (j.contains("epoch")) {
    if (!j.at("epoch").is_number_unsigned()) throw Corrupt("bad epoch");
    s.highest_epoch = j.at("epoch").get<uint64_t>();
  }
}

json state_to_json(const AgentState& s) {
  json j;
  j["schema"] = AgentState::kSchema;
  body_to_json(s, j);
  j["results"] = json::array();
  for (const auto& r : s.results) j["results"].push_back(report_json(r));
  return j;
}

// A whole state (agent-state.json, either schema); `seq` gets its sequence number (0 in schema 1).
Expected<AgentState> state_from_json_text(const std::string& text, uint64_t* seq) {
  try {
    json j = json::parse(text);
    int schema = j.at("schema").get<int>();
    // Schema 1 is schema 2 without `seq` (and without a journal after it). A newer schema is
    // refused rather than misread.
    if (schema != 1 && schema != AgentState::kSchema)
      return make_error("corrupt", "unsupported journal schema " + std::to_string(schema));
    AgentState s;
    body_from_json(j, s);
    for (const auto& r : j.at("results")) s.results.push_back(report_from(r));
    while (s.results.size() > AgentState::kMaxResults) s.results.pop_front();
    if (seq) *seq = j.value("seq", uint64_t{0});
    return s;
  } catch (const std::exception& e) {
    return make_error("corrupt", std::string("journal is corrupt: ") + e.what());
  }
}

// CRC-32 (IEEE 802.3, as zlib's crc32) of a journal record's payload.
uint32_t crc32(const char* data, size_t n) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ static_cast<unsigned char>(data[i])) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

constexpr char kMagic[8] = {'G', 'N', 'T', 'Y', 'J', 'N', 'L', '1'};  // journal file, format 1
constexpr size_t kRecordHeader = 8;                                   // u32 length, u32 CRC-32 (little endian)
// Records start on their own 4 KiB block (the first block holds the magic): writing one never
// rewrites a block that holds an earlier record, so a torn write can only damage itself.
constexpr size_t kBlock = 4096;
size_t block_up(size_t n) { return (n + kBlock - 1) / kBlock * kBlock; }
constexpr size_t kMaxFile = 16 * 1024 * 1024;

void put_u32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
}
uint32_t get_u32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

Error io_error(const std::string& what, int e) {
  return make_error(e == ENOSPC ? "disk_full" : "io", what + ": " + std::strerror(e));
}

Status pwrite_all(int fd, const char* data, size_t n, size_t off, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::pwrite(fd, data, n, static_cast<off_t>(off));
    if (w < 0) {
      if (errno == EINTR) continue;
      return io_error("write " + path, errno);
    }
    data += w;
    n -= static_cast<size_t>(w);
    off += static_cast<size_t>(w);
  }
  return Status::Ok();
}

}  // namespace

// The journal must always be writable, whatever text a probe, an archive or a peer put in a
// message: invalid UTF-8 that got past the entry points is written as U+FFFD rather than
// throwing, which would crash the agent in the middle of an order and again on every restart.
namespace {
std::string dump_text(const json& j, int indent) { return j.dump(indent, ' ', false, json::error_handler_t::replace); }
}  // namespace

std::string serialize_state(const AgentState& s) { return dump_text(state_to_json(s), 2) + "\n"; }

Expected<AgentState> parse_state(const std::string& text) { return state_from_json_text(text, nullptr); }

// ---------------------------------------------------------------------------------------------
// FileStateStore

FileStateStore::FileStateStore(std::string state_dir, size_t journal_bytes)
    : dir_(std::move(state_dir)),
      path_(dir_ + "/agent-state.json"),
      journal_path_(dir_ + "/agent-state.journal"),
      journal_bytes_(block_up(std::max<size_t>(journal_bytes, 2 * kBlock))) {}

FileStateStore::~FileStateStore() {
  if (fd_ >= 0) ::close(fd_);
}

Expected<AgentState> FileStateStore::load() {
  AgentState s;
  uint64_t base = 0;
  std::optional<Error> bad;  // the snapshot is unreadable: still learn the journal's seqs
  auto text = fs::read_file(path_, kMaxFile);
  if (text) {
    auto parsed = state_from_json_text(*text, &base);
    if (parsed)
      s = std::move(*parsed);
    else
      bad = parsed.error();
  } else if (text.error().code != "not_found") {
    return text.error();
  }
  seq_ = std::max(seq_, base);
  auto log = fs::read_file(journal_path_, kMaxFile);
  if (!log) {
    if (bad) return *bad;
    if (log.error().code == "not_found") return s;  // schema 1, or nothing saved yet
    return log.error();
  }
  const std::string& b = *log;
  if (b.size() < sizeof kMagic || std::memcmp(b.data(), kMagic, sizeof kMagic) != 0)
    return make_error("corrupt", "journal is corrupt: " + journal_path_ + " is not a gantry journal");
  uint64_t last = base;
  bool applying = !bad;
  size_t off = kBlock;
  try {
    while (off + kRecordHeader <= b.size()) {
      uint32_t len = get_u32(b.data() + off);
      if (len == 0 || len > b.size() - off - kRecordHeader) break;  // the end, or a torn length
      const char* payload = b.data() + off + kRecordHeader;
      if (crc32(payload, len) != get_u32(b.data() + off + 4)) break;  // torn record: its save never returned
      off = block_up(off + kRecordHeader + len);
      json j = json::parse(payload, payload + len);
      uint64_t seq = j.at("seq").get<uint64_t>();
      seq_ = std::max(seq_, seq);
      // A record out of sequence is left over from before the snapshot; so is all that follows.
      if (!applying || seq != last + 1) {
        applying = false;
        continue;
      }
      body_from_json(j, s);
      if (j.contains("results")) {
        s.results.clear();
        for (const auto& r : j.at("results")) s.results.push_back(report_from(r));
        while (s.results.size() > AgentState::kMaxResults) s.results.pop_front();
      }
      if (j.contains("results_add"))
        for (const auto& r : j.at("results_add")) s.add_result(report_from(r));
      last = seq;
    }
  } catch (const std::exception& e) {
    return make_error("corrupt", std::string("journal is corrupt: ") + e.what());
  }
  if (bad) return *bad;
  s.results_added = 0;
  return s;
}

Status FileStateStore::check_room() const {
  struct statvfs v {};
  if (::fstatvfs(fd_, &v) != 0) return Status::Ok();  // cannot tell: the writes will
  uint64_t blocks = ::geteuid() == 0 ? v.f_bfree : v.f_bavail;
  uint64_t need = snapshot_bytes_ + 4096;
  if (blocks * v.f_frsize < need)
    return make_error("disk_full",
                      "write " + journal_path_ + ": No space left on device (no room for the next snapshot)");
  return Status::Ok();
}

// The journal a previous process preallocated, if it has our size and magic: its records are all
// older than the snapshot just written (load() saw their seqs), so it can simply start over.
bool FileStateStore::reuse_journal() {
  int fd = ::open(journal_path_.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat st {};
  char magic[sizeof kMagic] = {};
  if (::fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) != journal_bytes_ ||
      ::pread(fd, magic, sizeof magic, 0) != static_cast<ssize_t>(sizeof magic) ||
      std::memcmp(magic, kMagic, sizeof kMagic) != 0) {
    ::close(fd);
    return false;
  }
  fd_ = fd;
  return true;
}

Status FileStateStore::snapshot(const AgentState& s) {
  if (Status st = fs::make_dirs(dir_, 0700); !st.ok()) return st;
  if (fd_ < 0 && seq_ == 0) {
    // Saved before load(): learn the sequence numbers already on disk, so that the snapshot
    // outranks every record of the journal it replaces.
    (void)load();
  }
  json j = state_to_json(s);
  j["seq"] = seq_ + 1;
  std::string text = dump_text(j, 2) + "\n";
  if (Status st = fs::write_file_atomic(path_, text, 0600); !st.ok()) return st;
  // Durable from here: the records in the journal are all older than this snapshot.
  ++seq_;
  snapshot_bytes_ = text.size();
  results_mark_ = s.results_added;
  ++snapshots_;
  need_snapshot_ = false;
  offset_ = kBlock;
  if (fd_ >= 0) return Status::Ok();  // the same (preallocated) journal starts over
  if (reuse_journal()) return Status::Ok();

  // A new journal: magic + zeros, fsynced, renamed over the old one, dir fsynced.
  std::string tmp = journal_path_ + ".tmp";
  int fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  Status st = Status::Ok();
  if (fd < 0) st = io_error("create " + tmp, errno);
  std::string init(journal_bytes_, '\0');
  std::memcpy(init.data(), kMagic, sizeof kMagic);
  if (st.ok()) st = pwrite_all(fd, init.data(), init.size(), 0, tmp);
  if (st.ok() && ::fsync(fd) != 0) st = io_error("fsync " + tmp, errno);
  if (st.ok() && ::rename(tmp.c_str(), journal_path_.c_str()) != 0) st = io_error("rename " + tmp, errno);
  if (st.ok()) st = fs::fsync_dir(dir_);
  if (!st.ok()) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    // The snapshot holds the state; without a journal every save is a snapshot.
    need_snapshot_ = true;
    return Status::Ok();
  }
  fd_ = fd;
  return Status::Ok();
}

Status FileStateStore::append(const AgentState& s, bool sync) {
  json j;
  j["seq"] = seq_ + 1;
  body_to_json(s, j);
  uint64_t added = s.results_added - results_mark_;
  if (s.results_added < results_mark_ || added >= s.results.size()) {
    j["results"] = json::array();
    for (const auto& r : s.results) j["results"].push_back(report_json(r));
  } else if (added > 0) {
    j["results_add"] = json::array();
    for (size_t i = s.results.size() - added; i < s.results.size(); ++i)
      j["results_add"].push_back(report_json(s.results[i]));
  }
  std::string payload = dump_text(j, -1);
  size_t n = kRecordHeader + payload.size();
  if (offset_ + n > journal_bytes_) return snapshot(s);  // full: start over behind a snapshot
  if (Status st = check_room(); !st.ok()) return st;
  std::string rec(kRecordHeader, '\0');
  put_u32(rec.data(), static_cast<uint32_t>(payload.size()));
  put_u32(rec.data() + 4, crc32(payload.data(), payload.size()));
  rec += payload;
  Status st = pwrite_all(fd_, rec.data(), rec.size(), offset_, journal_path_);
  // fdatasync flushes every dirty block of the file: also a record save_lazy() wrote before.
  if (st.ok() && sync && ::fdatasync(fd_) != 0) st = io_error("fdatasync " + journal_path_, errno);
  if (!st.ok()) {
    // The record may or may not have reached the disk. Unmake it as far as we can (a zero length
    // ends the journal before it), so that a crash now does not resurrect a save that failed;
    // and the next save writes a snapshot, whose seq outranks it either way.
    const char zero[kRecordHeader] = {};
    if (pwrite_all(fd_, zero, sizeof zero, offset_, journal_path_).ok()) (void)::fdatasync(fd_);
    need_snapshot_ = true;
    return st;
  }
  ++seq_;
  offset_ = block_up(offset_ + n);
  results_mark_ = s.results_added;
  return Status::Ok();
}

Status FileStateStore::save(const AgentState& s) {
  if (need_snapshot_ || fd_ < 0) return snapshot(s);
  return append(s, /*sync=*/true);
}

Status FileStateStore::save_lazy(const AgentState& s) {
  if (need_snapshot_ || fd_ < 0) return snapshot(s);
  return append(s, /*sync=*/false);
}

void FileStateStore::maintain(const AgentState& s) {
  if (need_snapshot_ || fd_ < 0 || offset_ * 2 >= journal_bytes_) (void)snapshot(s);
}

Expected<AgentState> MemoryStateStore::load() {
  std::lock_guard lk(mu_);
  if (text_.empty()) return AgentState{};
  return parse_state(text_);
}

Status MemoryStateStore::save(const AgentState& s) {
  std::lock_guard lk(mu_);
  if (fail_ > 0 && fail_after_ > 0) {
    --fail_after_;
  } else if (fail_ > 0) {
    --fail_;
    return err_;
  }
  text_ = serialize_state(s);
  ++saves_;
  return Status::Ok();
}

void MemoryStateStore::fail_next(int n, Error err, int after) {
  std::lock_guard lk(mu_);
  fail_ = n;
  fail_after_ = after;
  err_ = std::move(err);
}

Status MemoryStateStore::save_lazy(const AgentState& s) {
  Status st = save(s);
  std::lock_guard lk(mu_);
  if (st.ok()) ++lazy_saves_;
  return st;
}

int MemoryStateStore::saves() const {
  std::lock_guard lk(mu_);
  return saves_;
}

int MemoryStateStore::lazy_saves() const {
  std::lock_guard lk(mu_);
  return lazy_saves_;
}

std::string MemoryStateStore::text() const {
  std::lock_guard lk(mu_);
  return text_;
}

}  // namespace gantry::agent
