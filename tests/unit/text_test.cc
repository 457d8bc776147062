// Text from outside made safe where it enters (common/util/text.h).
#include "common/util/text.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/protocol/codec.h"

namespace gantry {
namespace {

TEST(SafeText, LeavesOrdinaryTextAlone) {
  EXPECT_EQ(safe_text("plain ascii: ok"), "plain ascii: ok");
  EXPECT_EQ(safe_text("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x9a\x80"), "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x9a\x80");
  EXPECT_EQ(safe_text("back\\slash"), "back\\slash");
  EXPECT_TRUE(is_safe_text("caf\xc3\xa9"));
}

TEST(SafeText, EscapesControlCharactersVisibly) {
  EXPECT_EQ(safe_text("a\nb"), "a\\x0ab");
  EXPECT_EQ(safe_text("\x1b]52;c;ZXZpbA==\x07"), "\\x1b]52;c;ZXZpbA==\\x07");  // OSC 52 clipboard write
  EXPECT_EQ(safe_text("del\x7f"), "del\\x7f");
  EXPECT_EQ(safe_text("c1\xc2\x9b"), "c1\\xc2\\x9b");  // U+009B, a C1 CSI
  // Once escaping is needed a backslash is doubled, so "\x0a" typed by a peer stays distinct.
  EXPECT_EQ(safe_text("\\x0a\n"), "\\\\x0a\\x0a");
}

TEST(SafeText, InvalidUtf8BecomesEscapedBytes) {
  EXPECT_FALSE(is_valid_utf8("\xff"));
  EXPECT_EQ(safe_text("bad\xff\xfe"), "bad\\xff\\xfe");
  EXPECT_EQ(safe_text("\xc0\xaf"), "\\xc0\\xaf");           // overlong '/'
  EXPECT_EQ(safe_text("\xed\xa0\x80"), "\\xed\\xa0\\x80");  // a surrogate
  EXPECT_EQ(safe_text("\xe2\x82"), "\\xe2\\x82");           // cut short
  EXPECT_TRUE(is_valid_utf8(safe_text("\xf4\x90\x80\x80 past U+10FFFF")));
  EXPECT_NO_THROW((void)nlohmann::json(safe_text("\xff\xfe\xfd")).dump());
}

TEST(SafeText, BoundsItsOutputOnACharacterBoundary) {
  const std::string out = safe_text(std::string(100, '\x01'), 20);
  EXPECT_LE(out.size(), 23u);
  EXPECT_EQ(out.substr(out.size() - 3), "...");
  EXPECT_TRUE(is_safe_text(out));
  EXPECT_EQ(safe_text("", 10), "");
}

// The codec is where wire text enters: a Report whose message is not UTF-8 decodes into safe text.
TEST(SafeText, TheCodecMakesFreeTextFieldsSafe) {
  proto::Report r;
  r.order_id = "r1-1";
  r.rollout_id = 1;
  r.service = "web";
  r.outcome = "failed";
  r.running_version = "v1";
  r.message = "probe said \xff\x1b[31mred";
  auto m = proto::decode(proto::encode(proto::Message{r}));
  ASSERT_TRUE(m.ok()) << m.error().message;
  const auto& got = std::get<proto::Report>(*m);
  EXPECT_EQ(got.message, "probe said \\xff\\x1b[31mred");
  EXPECT_NO_THROW((void)nlohmann::json(got.message).dump());

  proto::OpRequest op;
  op.request_id = "1";
  op.command = "rollout.start";
  op.args = nlohmann::json::object();
  op.args["reason"] = std::string("why\xff");
  op.args[std::string("k\x1b")] = "v";
  auto o = proto::decode(proto::encode(proto::Message{op}));
  ASSERT_TRUE(o.ok()) << o.error().message;
  const auto& args = std::get<proto::OpRequest>(*o).args;
  EXPECT_NO_THROW((void)args.dump());
  EXPECT_EQ(args.value("reason", ""), "why\\xff");
  EXPECT_TRUE(args.contains("k\\x1b"));
}

// Found by fuzz_decode: a request_id of 128 bytes with invalid bytes was escaped to more than
// 128 and refused when the decoded message was encoded and decoded again. A cut text fits its
// bound, "..." included, and is a fixed point of safe_text.
TEST(SafeText, ACutTextFitsItsBoundAndIsAFixedPoint) {
  for (std::size_t max : {0u, 1u, 3u, 4u, 5u, 16u, 127u, 128u}) {
    for (const std::string& in :
         {std::string(200, 'u'), std::string(40, '\xdb') + std::string(100, 'u'),
          std::string("a\x1b") + std::string(150, '\\'), std::string("\xe2\x82\xac") + std::string(130, 'x')}) {
      const std::string out = safe_text(in, max);
      EXPECT_LE(out.size(), max) << max;
      EXPECT_TRUE(is_safe_text(out)) << out;
      EXPECT_EQ(safe_text(out, max), out) << max;
    }
  }
  proto::OpRequest op;
  op.request_id = std::string(29, 'u') + "\xdb" + std::string(98, 'u');
  op.command = "hosts";
  auto once = proto::decode(proto::encode(proto::Message{op}));
  ASSERT_TRUE(once.ok()) << once.error().message;
  auto twice = proto::decode(proto::encode(*once));
  ASSERT_TRUE(twice.ok()) << twice.error().message;
  EXPECT_LE(std::get<proto::OpRequest>(*twice).request_id.size(), 128u);
}

}  // namespace
}  // namespace gantry
