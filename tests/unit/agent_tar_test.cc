#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sstream>

#include "agent/release/tar_extract.h"
#include "agent_test_util.h"

using namespace gantry;
using namespace gantry::agent;
using namespace gantry::agent::testing;

namespace {

Expected<TarStats> extract_string(const std::string& archive, const std::string& dir) {
  std::istringstream in(archive);
  TarLimits lim;
  lim.archive_size = archive.size();
  lim.fsync = false;
  return extract_tar(in, dir, lim);
}

// Every path under `root` (relative), to prove nothing landed elsewhere.
size_t count_entries(const std::string& root) {
  size_t n = 0;
  for (auto it = std::filesystem::recursive_directory_iterator(root);
       it != std::filesystem::recursive_directory_iterator(); ++it)
    ++n;
  return n;
}

}  // namespace

TEST(AgentTar, ExtractsRealUstarArchiveWithModesAndSymlinks) {
  TempDir t;
  write_text(t / "src/bin/app", "#!/bin/sh\necho hi\n", 0755);
  write_text(t / "src/share/data.txt", std::string(70000, 'x'));
  std::filesystem::create_directories(t / "src/empty");
  ASSERT_EQ(::symlink("../share/data.txt", (t / "src/bin/data").c_str()), 0);
  ASSERT_EQ(::symlink("bin/app", (t / "src/app").c_str()), 0);
  // A name longer than 100 chars exercises the ustar prefix field.
  std::string deep = "src/" + std::string(60, 'd') + "/" + std::string(60, 'e') + "/file";
  write_text(t / deep, "deep");
  std::string tar = make_tar(t / "src", t / "a.tar");
  ASSERT_FALSE(tar.empty());
  std::filesystem::create_directories(t / "out");
  auto r = extract_tar_file(t / "a.tar", t / "out");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(read_text(t / "out/bin/app"), "#!/bin/sh\necho hi\n");
  struct stat st;
  ASSERT_EQ(::stat((t / "out/bin/app").c_str(), &st), 0);
  EXPECT_TRUE(st.st_mode & S_IXUSR) << "exec bit lost";
  EXPECT_EQ(read_text(t / "out/bin/data").size(), 70000u);
  EXPECT_EQ(read_text(t / "out/app"), "#!/bin/sh\necho hi\n");
  EXPECT_TRUE(std::filesystem::is_directory(t / "out/empty"));
  EXPECT_EQ(read_text(t / ("out/" + deep.substr(4))), "deep");
  EXPECT_EQ(r->symlinks, 2u);
}

TEST(AgentTar, RefusesDotDot) {
  TempDir t;
  std::filesystem::create_directories(t / "out");
  auto r = extract_string(tar_header("../x", '0', 3) + tar_data("bad") + tar_end(), t / "out");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find(".."), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(t / "x"));
  r = extract_string(tar_header("a/../../x", '0', 3) + tar_data("bad") + tar_end(), t / "out");
  EXPECT_FALSE(r.ok());
  EXPECT_FALSE(std::filesystem::exists(t / "x"));
}

TEST(AgentTar, RefusesAbsolutePath) {
  TempDir t;
  std::filesystem::create_directories(t / "out");
  std::string target = t / "abs-victim";
  auto r = extract_string(tar_header(target, '0', 3) + tar_data("bad") + tar_end(), t / "out");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("absolute"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(target));
}

TEST(AgentTar, RefusesEscapingSymlinks) {
  TempDir t;
  std::filesystem::create_directories(t / "out");
  EXPECT_FALSE(extract_string(tar_header("evil", '2', 0, "../../etc") + tar_end(), t / "out").ok());
  EXPECT_FALSE(extract_string(tar_header("evil2", '2', 0, "/etc/passwd") + tar_end(), t / "out2").ok());
  EXPECT_FALSE(std::filesystem::exists(t / "out/evil"));
}

TEST(AgentTar, RefusesSymlinkClimbingThroughAnotherSymlink) {
  TempDir t;
  std::filesystem::create_directories(t / "out");
  // Lexically "b" -> "a/.." stays inside, but with a -> "." it would be the parent of the release.
  auto r = extract_string(tar_header("a", '2', 0, ".") + tar_header("b", '2', 0, "a/..") + tar_end(), t / "out");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("another symlink"), std::string::npos) << r.error().message;
}

TEST(AgentTar, NeverWritesThroughASymlink) {
  TempDir t;
  std::filesystem::create_directories(t / "out");
  std::filesystem::create_directories(t / "out/sub");
  auto r = extract_string(tar_header("l", '2', 0, "sub") + tar_header("l/x", '0', 3) + tar_data("bad") + tar_end(),
                          t / "out");
  ASSERT_FALSE(r.ok());
  EXPECT_FALSE(std::filesystem::exists(t / "out/sub/x"));
}

TEST(AgentTar, RefusesHardlinksDevicesFifosAndPax) {
  TempDir t;
  for (char type : {'1', '3', '4', '6', 'x'}) {
    std::string dir = t / (std::string("out") + type);
    std::filesystem::create_directories(dir);
    auto r = extract_string(tar_header("thing", type, 0, "target") + tar_end(), dir);
    EXPECT_FALSE(r.ok()) << "type " << type;
    EXPECT_EQ(count_entries(dir), 0u) << "type " << type;
  }
}

TEST(AgentTar, RefusesTruncatedAndCorruptInput) {
  TempDir t;
  std::filesystem::create_directories(t / "out");
  std::string good = tar_header("f", '0', 5) + tar_data("hello") + tar_end();
  EXPECT_TRUE(extract_string(good, t / "out").ok());
  std::filesystem::create_directories(t / "o2");
  EXPECT_FALSE(extract_string(good.substr(0, 300), t / "o2").ok()) << "truncated header";
  EXPECT_FALSE(extract_string(tar_header("f", '0', 5) + "hel", t / "o2").ok()) << "truncated data";
  EXPECT_FALSE(extract_string(tar_header("g", '0', 5) + tar_data("hello"), t / "o2").ok()) << "no end marker";
  std::string bad_sum = good;
  bad_sum[0] = 'z';
  std::filesystem::create_directories(t / "o3");
  auto r = extract_string(bad_sum, t / "o3");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("checksum"), std::string::npos);
  // A file claiming more bytes than the whole archive holds.
  std::filesystem::create_directories(t / "o4");
  r = extract_string(tar_header("big", '0', 1 << 30) + tar_data("x") + tar_end(), t / "o4");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("larger than the archive"), std::string::npos) << r.error().message;
  EXPECT_FALSE(std::filesystem::exists(t / "o4/big"));
}

TEST(AgentTar, RefusesDuplicatesAndStripsSetuid) {
  TempDir t;
  std::filesystem::create_directories(t / "out");
  auto r = extract_string(tar_header("f", '0', 1) + tar_data("a") + tar_header("f", '0', 1) + tar_data("b") + tar_end(),
                          t / "out");
  EXPECT_FALSE(r.ok());
  std::filesystem::create_directories(t / "o2");
  r = extract_string(tar_header("s", '0', 1, "", 04755) + tar_data("a") + tar_end(), t / "o2");
  ASSERT_TRUE(r.ok()) << r.error().message;
  struct stat st;
  ASSERT_EQ(::stat((t / "o2/s").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
}
