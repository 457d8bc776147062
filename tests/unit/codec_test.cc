// The wire codec: round trips, golden bytes, limits and hostile input.
#include <gtest/gtest.h>

#include <msgpack.hpp>

#include <random>

#include "common/protocol/codec.h"

using namespace gantry::proto;

namespace {

std::string hex(const std::string& s) {
  static const char* d = "0123456789abcdef";
  std::string o;
  for (unsigned char c : s) {
    o += d[c >> 4];
    o += d[c & 15];
  }
  return o;
}

std::string unhex(const std::string& h) {
  std::string o;
  for (size_t i = 0; i + 1 < h.size(); i += 2) o += static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16));
  return o;
}

template <typename T>
T round_trip(const T& m) {
  auto r = decode(encode(m));
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  EXPECT_TRUE(std::holds_alternative<T>(*r));
  return std::get<T>(*r);
}

// Packs an envelope {"t": t, "b": <body written by f>} by hand, for hostile inputs.
template <typename F>
std::string envelope(uint64_t t, F&& body) {
  msgpack::sbuffer sb;
  msgpack::packer<msgpack::sbuffer> p(&sb);
  p.pack_map(2);
  p.pack(std::string("t"));
  p.pack(t);
  p.pack(std::string("b"));
  body(p);
  return std::string(sb.data(), sb.size());
}

const std::string kSha(64, 'a');

}  // namespace

TEST(Codec, HelloRoundTrip) {
  Hello h;
  h.host_id = "web-1";
  h.agent_version = "0.1.0";
  h.labels = {{"zone", "eu-1"}, {"role", "web"}};
  h.services.push_back({"web", "v1", "v0", "idle", ""});
  auto d = round_trip(h);
  EXPECT_EQ(d.protocol_version, kProtocolVersion);
  EXPECT_EQ(d.host_id, "web-1");
  EXPECT_EQ(d.labels.at("zone"), "eu-1");
  ASSERT_EQ(d.services.size(), 1u);
  EXPECT_EQ(d.services[0].current_version, "v1");
  EXPECT_EQ(d.services[0].previous_version, "v0");
}

TEST(Codec, EveryMessageTypeRoundTrips) {
  EXPECT_EQ(round_trip(Welcome{1, 500, 4, 9}).heartbeat_misses, 4u);
  EXPECT_EQ(round_trip(Heartbeat{42}).seq, 42u);
  Order o{"r1-1", 1, "web", "update", "2.4.1", kSha, 1234, 500, 9000, "", ""};
  auto od = round_trip(o);
  EXPECT_EQ(od.order_id, "r1-1");
  EXPECT_EQ(od.size, 1234u);
  EXPECT_EQ(od.healthy_deadline_ms, 9000u);
  EXPECT_EQ(round_trip(OrderAck{"r1-1", "duplicate", "seen"}).status, "duplicate");
  EXPECT_EQ(round_trip(FetchChunk{kSha, 10, 100}).length, 100u);
  Chunk c{kSha, 0, 4, std::string("\0\1\2\3", 4)};
  EXPECT_EQ(round_trip(c).data, std::string("\0\1\2\3", 4));
  EXPECT_EQ(round_trip(Progress{"r1-1", "verifying", "2 of 3"}).phase, "verifying");
  Report r{"r1-1", 1, "web", "failed_reverted", "2.4.0", "probe said 500", {{"verify", 30}}};
  auto rd = round_trip(r);
  EXPECT_EQ(rd.outcome, "failed_reverted");
  EXPECT_EQ(rd.timings_ms.at("verify"), 30u);
  EXPECT_EQ(round_trip(ErrorMsg{"not_found", "no", 6, kSha}).ref_type, 6u);
  EXPECT_EQ(round_trip(Signal{"rollback", 3, "web"}).kind, "rollback");
  OpRequest q{"1-1", "rollout.start", {{"service", "web"}, {"plan", {{"batches", {1, "10%"}}}}}};
  EXPECT_EQ(round_trip(q).args["plan"]["batches"][1], "10%");
  OpReply a{"1-1", true, "", {{"hosts", nlohmann::json::array()}}};
  EXPECT_TRUE(round_trip(a).result["hosts"].is_array());
}

TEST(Codec, OptionalHeartbeatFieldsAreAppendedOnlyWhenSet) {
  // Welcome.coordinator_heartbeat_ms and Hello.capabilities were appended to protocol 1: unset,
  // the encoding is the old 4-entry (5-entry) map, and a message without them decodes as 0.
  Welcome old{1, 1000, 3, 2};
  EXPECT_EQ(hex(encode(old)).substr(0, 10), "82a17402a1") << "envelope";
  EXPECT_EQ(static_cast<uint8_t>(encode(old)[6]), 0x84) << "four fields when unset";
  EXPECT_EQ(round_trip(old).coordinator_heartbeat_ms, 0u);
  Welcome w{1, 1000, 3, 2, 10000};
  EXPECT_EQ(static_cast<uint8_t>(encode(w)[6]), 0x85);
  EXPECT_EQ(round_trip(w).coordinator_heartbeat_ms, 10000u);
  Hello h;
  h.host_id = "web-1";
  EXPECT_EQ(round_trip(h).capabilities, 0u);
  h.capabilities = kCapCoordinatorHeartbeat;
  EXPECT_EQ(round_trip(h).capabilities, kCapCoordinatorHeartbeat);
  // Out of range is refused like any other bad field.
  auto bad = decode(envelope(2, [](auto& p) {
    p.pack_map(5);
    p.pack(std::string("protocol_version"));
    p.pack(1);
    p.pack(std::string("heartbeat_interval_ms"));
    p.pack(1000);
    p.pack(std::string("heartbeat_misses"));
    p.pack(3);
    p.pack(std::string("epoch"));
    p.pack(1);
    p.pack(std::string("coordinator_heartbeat_ms"));
    p.pack(uint64_t{3600001});
  }));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, "invalid");
}

TEST(Codec, UdpHeartbeatSessionFieldsRoundTripAndAreChecked) {
  Welcome w{1, 1000, 3, 2, 10000};
  EXPECT_EQ(static_cast<uint8_t>(encode(w)[6]), 0x85) << "no session: no udp fields";
  w.udp_port = 7400;
  w.udp_session = 0xdeadbeef;
  w.udp_key = std::string(32, '\x07');
  EXPECT_EQ(static_cast<uint8_t>(encode(w)[6]), 0x88);
  auto back = round_trip(w);
  EXPECT_EQ(back.udp_port, 7400u);
  EXPECT_EQ(back.udp_session, 0xdeadbeefu);
  EXPECT_EQ(back.udp_key, w.udp_key);
  // A key that is not 32 bytes, or a session without a port, is refused.
  w.udp_key = std::string(31, 'x');
  auto short_key = decode(encode(w));
  ASSERT_FALSE(short_key.ok());
  EXPECT_NE(short_key.error().message.find("udp_key"), std::string::npos);
  w.udp_key = std::string(32, 'x');
  w.udp_port = 0;
  EXPECT_FALSE(decode(encode(w)).ok());

  Heartbeat plain{5};
  EXPECT_EQ(hex(encode(plain)), hex(encode(Heartbeat{5, 0, false}))) << "unset fields are not written";
  Heartbeat confirm{6, 41, false}, lost{7, 0, true};
  EXPECT_EQ(round_trip(confirm).udp_seq, 41u);
  EXPECT_FALSE(round_trip(confirm).udp_lost);
  EXPECT_TRUE(round_trip(lost).udp_lost);
  Heartbeat deaf{8};
  deaf.udp_deaf = true;
  EXPECT_TRUE(round_trip(deaf).udp_deaf);
  EXPECT_FALSE(round_trip(lost).udp_deaf);
  Hello h;
  h.host_id = "web-1";
  h.capabilities = kCapCoordinatorHeartbeat | kCapUdpHeartbeat;
  EXPECT_EQ(round_trip(h).capabilities, 3u);
}

TEST(Codec, HeartbeatSignalChannelIsOptionalAndChecked) {
  // An older agent omits it: the bytes are those of a plain heartbeat, and it decodes as "".
  Heartbeat plain{5};
  EXPECT_EQ(hex(encode(plain)), "82a17403a16281a373657105");
  EXPECT_EQ(round_trip(plain).signal_channel, "");
  Heartbeat up{6};
  up.signal_channel = "up";
  EXPECT_EQ(hex(encode(up)), "82a17403a16282a373657106ae7369676e616c5f6368616e6e656ca27570");
  EXPECT_EQ(round_trip(up).signal_channel, "up");
  Heartbeat down{7};
  down.signal_channel = "down";
  EXPECT_EQ(round_trip(down).signal_channel, "down");
  // Any other value is refused like every other enumerated field.
  auto bad = decode(envelope(3, [](auto& p) {
    p.pack_map(2);
    p.pack(std::string("seq"));
    p.pack(1);
    p.pack(std::string("signal_channel"));
    p.pack(std::string("sideways"));
  }));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, "invalid");
}

TEST(Codec, GoldenBytes) {
  // {"t":3,"b":{"seq":1}}: fixmap(2), "t", 3, "b", fixmap(1), "seq", 1 — documented in PROTOCOL.md.
  EXPECT_EQ(hex(encode(Heartbeat{1})), "82a17403a16281a373657101");
  auto d = decode(unhex("82a17403a16281a373657101"));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(std::get<Heartbeat>(*d).seq, 1u);
  EXPECT_EQ(hex(encode(Signal{"abort", 7, "web"})),
            "82a1740ba16283a46b696e64a561626f7274aa726f6c6c6f75745f696407a773657276696365a3776562");
}

TEST(Codec, ChunkHeadPlusDataIsTheChunkEncoding) {
  // The coordinator reads artifact bytes straight into a frame behind encode_chunk_head; the
  // frame must be byte for byte encode(Chunk), for every bin length class (bin8/16/32).
  const std::string sha(64, 'c');
  for (size_t n :
       {size_t{0}, size_t{1}, size_t{255}, size_t{256}, size_t{65535}, size_t{65536}, size_t{kMaxChunkBytes}}) {
    std::string data(n, '\0');
    for (size_t i = 0; i < n; ++i) data[i] = static_cast<char>(i * 31 + 7);
    for (uint64_t off : {uint64_t{0}, uint64_t{300}, uint64_t{1} << 33}) {
      Chunk c{sha, off, off + n + 5, data};
      EXPECT_EQ(encode_chunk_head(sha, c.offset, c.total_size, n) + data, encode(c)) << n << " bytes at " << off;
      auto back = decode(encode_chunk_head(sha, c.offset, c.total_size, n) + data);
      ASSERT_TRUE(back.ok());
      EXPECT_EQ(std::get<Chunk>(*back).data, data);
    }
  }
}

TEST(Codec, DecodeChunkLeavesTheDataInTheFrame) {
  const std::string sha(64, 'd');
  std::string data(1000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 13);
  const std::string frame = encode(Chunk{sha, 4096, 9000, data});
  auto v = decode_chunk(frame);
  ASSERT_TRUE(v.ok()) << v.error().message;
  EXPECT_EQ(v->sha256, sha);
  EXPECT_EQ(v->offset, 4096u);
  EXPECT_EQ(v->total_size, 9000u);
  EXPECT_EQ(v->data, data);
  EXPECT_GE(v->data.data(), frame.data()) << "a view into the frame, not a copy";
  EXPECT_LE(v->data.data() + v->data.size(), frame.data() + frame.size());
  // Other messages: "not_chunk"; bad input and bad chunks: the same errors as decode().
  EXPECT_EQ(decode_chunk(encode(Heartbeat{1})).error().code, "not_chunk");
  EXPECT_EQ(decode_chunk(frame + "x").error().code, decode(frame + "x").error().code);
  const std::string past = encode(Chunk{sha, 8500, 9000, data});
  EXPECT_EQ(decode_chunk(past).error().code, "invalid");
  EXPECT_EQ(decode(past).error().code, "invalid");
  EXPECT_EQ(decode_chunk("\xc1").error().code, "decode");
}

TEST(Codec, MalformedInputIsAnErrorNotACrash) {
  EXPECT_EQ(decode("").error().code, "decode");
  EXPECT_EQ(decode("\xc1").error().code, "decode");                      // never-used byte
  EXPECT_EQ(decode(encode(Heartbeat{1}) + "x").error().code, "decode");  // trailing bytes
  std::string full = encode(Heartbeat{1});
  EXPECT_FALSE(decode(full.substr(0, full.size() - 1)).ok());    // truncated
  EXPECT_EQ(decode(unhex("93010203")).error().code, "invalid");  // envelope not a map
  EXPECT_EQ(decode(envelope(99, [](auto& p) { p.pack_map(0); })).error().code, "unknown_type");
  EXPECT_EQ(decode(envelope(0, [](auto& p) { p.pack_map(0); })).error().code, "unknown_type");
  EXPECT_EQ(decode(envelope(3, [](auto& p) { p.pack_map(0); })).error().code, "invalid");  // missing seq
  EXPECT_EQ(decode(envelope(3,
                            [](auto& p) {
                              p.pack_map(1);
                              p.pack(std::string("seq"));
                              p.pack(std::string("one"));
                            }))
                .error()
                .code,
            "invalid");  // wrong type
}

TEST(Codec, NamesAndDigestsAreValidatedBeforeAnyHandlerSeesThem) {
  Order o{"r1-1", 1, "web", "update", "../../etc", kSha, 1, 0, 0, "", ""};
  auto r = decode(encode(o));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("version"), std::string::npos);
  o.version = "1.0";
  o.sha256 = "ABC";
  EXPECT_FALSE(decode(encode(o)).ok());
  o.sha256 = kSha;
  o.kind = "rm -rf";
  EXPECT_FALSE(decode(encode(o)).ok());
  Hello h;
  h.host_id = std::string("a\0b", 3);
  EXPECT_FALSE(decode(encode(h)).ok());
  h.host_id = "/abs";
  EXPECT_FALSE(decode(encode(h)).ok());
  h.host_id = "ok";
  h.labels["bad key"] = "v";
  EXPECT_FALSE(decode(encode(h)).ok());
  Chunk c{kSha, 10, 12, "abcd"};  // goes past total_size
  EXPECT_FALSE(decode(encode(c)).ok());
}

TEST(Codec, LimitViolationsAreRefused) {
  // A claimed array of 2^32-1 elements with no data behind it must not allocate.
  EXPECT_FALSE(decode(envelope(3, [](auto& p) {
                 p.pack_map(1);
                 p.pack(std::string("seq"));
                 p.pack_array(0xffffffffu);
               })).ok());
  // A claimed map of 2^32-1 entries.
  EXPECT_FALSE(decode(unhex("82a17403a162dfffffffff")).ok());
  // A claimed string of 2^32-1 bytes.
  EXPECT_FALSE(decode(unhex("82a17403a162dbffffffff")).ok());
  // Nesting deeper than the limit.
  std::string deep = unhex("82a17403a162");
  for (int i = 0; i < 100; ++i) deep += unhex("91");
  deep += unhex("00");
  auto r = decode(deep);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "limit");
  // A real string over the limit.
  DecodeLimits tight;
  tight.max_str = 16;
  EXPECT_EQ(decode(encode(Progress{"r1-1", "verifying", std::string(100, 'x')}), tight).error().code, "limit");
  // Chunk data larger than a chunk.
  Chunk big{kSha, 0, kMaxChunkBytes + 10, std::string(kMaxChunkBytes + 1, 'x')};
  EXPECT_FALSE(decode(encode(big)).ok());
}

TEST(Codec, DuplicateKeysAreRefused) {
  auto bytes = envelope(3, [](auto& p) {
    p.pack_map(2);
    p.pack(std::string("seq"));
    p.pack(1);
    p.pack(std::string("seq"));
    p.pack(2);
  });
  EXPECT_EQ(decode(bytes).error().code, "invalid");
}

TEST(Codec, RandomBytesNeverCrash) {
  std::mt19937 rng(12345);
  std::string base = encode(Order{"r1-1", 1, "web", "update", "1.0", kSha, 1, 0, 0, "", ""});
  for (int i = 0; i < 20000; ++i) {
    std::string s = base;
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) s[rng() % s.size()] = static_cast<char>(rng());
    if (rng() % 8 == 0) s.resize(rng() % s.size());
    auto r = decode(s);
    if (r.ok()) {
      EXPECT_NO_THROW(encode(*r));
    }
  }
}

TEST(Codec, EpochsOfOrdersAndSignalsAreOptional) {
  // Unset, the bytes are those an older coordinator sends (9 / 3 fields), and they decode as 0.
  Order o{"r1-1", 1, "web", "update", "1.0", kSha, 1, 0, 0, "", ""};
  EXPECT_EQ(static_cast<uint8_t>(encode(o)[6]), 0x89);
  EXPECT_EQ(round_trip(o).epoch, 0u);
  o.epoch = 1234567890123ULL;
  EXPECT_EQ(static_cast<uint8_t>(encode(o)[6]), 0x8a);
  EXPECT_EQ(round_trip(o).epoch, 1234567890123ULL);
  o.manifest = "m";
  o.signature = "ab";
  EXPECT_EQ(static_cast<uint8_t>(encode(o)[6]), 0x8c);
  EXPECT_EQ(round_trip(o).epoch, 1234567890123ULL);
  Signal s{"abort", 7, "web"};
  EXPECT_EQ(hex(encode(s)), "82a1740ba16283a46b696e64a561626f7274aa726f6c6c6f75745f696407a773657276696365a3776562");
  EXPECT_EQ(round_trip(s).epoch, 0u);
  s.epoch = 42;
  EXPECT_EQ(hex(encode(s)),
            "82a1740ba16284a46b696e64a561626f7274aa726f6c6c6f75745f696407a773657276696365a3776562a565706f63682a");
  EXPECT_EQ(round_trip(s).epoch, 42u);
  // Not an unsigned integer: refused like every other field.
  auto bad = decode(envelope(11, [](auto& p) {
    p.pack_map(4);
    p.pack(std::string("kind"));
    p.pack(std::string("abort"));
    p.pack(std::string("rollout_id"));
    p.pack(1);
    p.pack(std::string("service"));
    p.pack(std::string("web"));
    p.pack(std::string("epoch"));
    p.pack(-3);
  }));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, "invalid");
}

TEST(Codec, ErrorLeaderMapRoundTripsAndIsOptional) {
  ErrorMsg plain{"hello_required", "say hello first", 1, ""};
  EXPECT_EQ(static_cast<uint8_t>(encode(plain)[6]), 0x84) << "no leader: the old four fields";
  EXPECT_TRUE(round_trip(plain).leader.empty());
  ErrorMsg e{"not_leader", "this coordinator is a standby", 1, ""};
  e.leader = {{"name", "c2"},
              {"agent", "tcp://10.0.0.2:7600"},
              {"pub", "tcp://10.0.0.2:7601"},
              {"operator", "tcp://[fd00::2]:7602"},
              {"http", "http://c2.example:8080"},
              {"udp_heartbeat", "10.0.0.2:7603"}};
  EXPECT_EQ(static_cast<uint8_t>(encode(e)[6]), 0x85);
  EXPECT_EQ(round_trip(e).leader, e.leader);
  // Empty values (not known) pass; an empty map is the same as none.
  e.leader = {{"name", "c2"}, {"agent", ""}, {"http", ""}, {"udp_heartbeat", ""}};
  EXPECT_EQ(round_trip(e).leader, e.leader);
}

TEST(Codec, HostileLeaderMapsAreCodecErrors) {
  // Each value checked by its key; a bad one is an "invalid" error, never an exception.
  const std::vector<std::pair<std::string, std::string>> bad_values = {
      {"agent", "ipc:///tmp/x"},
      {"agent", "tcp://h"},
      {"agent", "tcp://h:0"},
      {"agent", "tcp://h:99999"},
      {"agent", "tcp://:7600"},
      {"agent", "tcp://-h:7600"},
      {"agent", "tcp://h;rm -rf:7600"},
      {"pub", "tcp://h\n:7601"},
      {"pub", "tcp://[::1:7601"},
      {"pub", "tcp://[zz::1]:7601"},
      {"operator", "pgm://eth0;239.1.1.1:5555"},
      {"operator", "tcp://" + std::string(400, 'a') + ":7602"},
      {"http", "https://h:80"},
      {"http", "http://h:80/path"},
      {"http", "tcp://h:80"},
      {"udp_heartbeat", "h"},
      {"udp_heartbeat", "udp://h:1"},
      {"udp_heartbeat", "h:70000"},
      {"name", "../../etc"},
      {"name", std::string("a\0b", 3)},
      {"name", std::string(200, 'n')},
      {"name", "\xff\xfe"},
  };
  for (const auto& [k, v] : bad_values) {
    ErrorMsg e{"not_leader", "", 1, ""};
    e.leader[k] = v;
    gantry::Expected<Message> r = Message{};
    EXPECT_NO_THROW(r = decode(encode(e))) << k;
    ASSERT_FALSE(r.ok()) << k << " = " << v;
    EXPECT_EQ(r.error().code, "invalid") << k;
    EXPECT_NE(r.error().message.find("leader"), std::string::npos) << r.error().message;
  }
  // Not a map; a value that is not a string; too many entries.
  auto with_leader = [](auto pack_leader) {
    return envelope(10, [&](auto& p) {
      p.pack_map(3);
      p.pack(std::string("code"));
      p.pack(std::string("not_leader"));
      p.pack(std::string("message"));
      p.pack(std::string(""));
      p.pack(std::string("leader"));
      pack_leader(p);
    });
  };
  EXPECT_EQ(decode(with_leader([](auto& p) { p.pack(std::string("tcp://h:1")); })).error().code, "invalid");
  EXPECT_EQ(decode(with_leader([](auto& p) {
              p.pack_map(1);
              p.pack(std::string("agent"));
              p.pack(7600);
            }))
                .error()
                .code,
            "invalid");
  EXPECT_EQ(decode(with_leader([](auto& p) {
              p.pack_map(17);
              for (int i = 0; i < 17; ++i) {
                p.pack("k" + std::to_string(i));
                p.pack(std::string("v"));
              }
            }))
                .error()
                .code,
            "invalid");
  // Keys a later version may add are dropped, not refused.
  auto extra = decode(with_leader([](auto& p) {
    p.pack_map(2);
    p.pack(std::string("agent"));
    p.pack(std::string("tcp://10.0.0.2:7600"));
    p.pack(std::string("grpc"));
    p.pack(std::string("anything \x01 at all"));
  }));
  ASSERT_TRUE(extra.ok()) << extra.error().message;
  const auto& leader = std::get<ErrorMsg>(*extra).leader;
  EXPECT_EQ(leader.size(), 1u);
  EXPECT_EQ(leader.at("agent"), "tcp://10.0.0.2:7600");
}

TEST(Codec, OpReplyNotLeaderFieldsAreOptionalAndChecked) {
  OpReply plain{"1-1", false, "no such rollout", nullptr};
  EXPECT_EQ(static_cast<uint8_t>(encode(plain)[6]), 0x84) << "unset: the old four fields";
  EXPECT_TRUE(round_trip(plain).error_code.empty());
  EXPECT_TRUE(round_trip(plain).leader.empty());
  OpReply standby{"1-2", false, "not_leader: this coordinator is a standby", nullptr};
  standby.error_code = "not_leader";
  standby.leader = {{"name", "c1"}, {"operator", "tcp://127.0.0.1:7602"}};
  EXPECT_EQ(static_cast<uint8_t>(encode(standby)[6]), 0x86);
  auto back = round_trip(standby);
  EXPECT_EQ(back.error_code, "not_leader");
  EXPECT_EQ(back.leader, standby.leader);
  standby.leader["operator"] = "tcp://127.0.0.1:7602;touch /tmp/x";
  auto bad = decode(encode(standby));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, "invalid");
  EXPECT_NE(bad.error().message.find("op reply: leader.operator"), std::string::npos) << bad.error().message;
  standby.leader.clear();
  standby.error_code = std::string(65, 'x');
  EXPECT_FALSE(decode(encode(standby)).ok()) << "error_code is at most 64 bytes";
}
