// The container driver against a scripted runtime (FakeRunner): the exact command lines it
// builds, the order of stop/run/rename in both start orders, how runtime errors are reported,
// staging of archives and pinned references, pruning; and the config keys that declare it.
#include <gtest/gtest.h>

#include <deque>
#include <nlohmann/json.hpp>

#include "agent/config/agent_config.h"
#include "agent/driver/container_driver.h"
#include "agent_test_util.h"
#include "common/util/fs.h"
#include "common/util/shell_words.h"

using namespace gantry;
using namespace gantry::agent;
using namespace gantry::agent::testing;

namespace {

const std::string kId1(64, 'a');
const std::string kId2(64, 'b');
const std::string kDigest = "sha256:" + std::string(64, 'c');

// Answers each command with the first rule whose needle it contains (exit 0, "" otherwise)
// and records every command line.
class FakeRunner final : public ProcessRunner {
 public:
  struct Rule {
    std::string needle;
    ProcessResult result;
    int times = -1;  // -1: forever
  };
  void on(const std::string& needle, int exit_code, const std::string& output = "", int times = -1) {
    ProcessResult r;
    r.exit_code = exit_code;
    r.output = output;
    rules.push_back({needle, r, times});
  }
  Expected<ProcessResult> run_shell(const std::string& command, const std::map<std::string, std::string>&,
                                    Millis) override {
    calls.push_back(command);
    for (auto& r : rules) {
      if (r.times == 0 || command.find(r.needle) == std::string::npos) continue;
      if (r.times > 0) --r.times;
      return r.result;
    }
    ProcessResult ok;
    ok.exit_code = 0;
    return ok;
  }
  // Index of the first call containing `needle`, or -1.
  int index(const std::string& needle) const {
    for (size_t i = 0; i < calls.size(); ++i)
      if (calls[i].find(needle) != std::string::npos) return static_cast<int>(i);
    return -1;
  }
  std::string all() const {
    std::string s;
    for (const auto& c : calls) s += c + "\n";
    return s;
  }
  std::deque<Rule> rules;
  std::vector<std::string> calls;
};

struct ContainerFixture : ::testing::Test {
  TempDir t;
  SystemClock clock;
  FakeRunner runner;
  ServiceConfig cfg;
  std::unique_ptr<ContainerDriver> d;

  void SetUp() override {
    cfg.name = "web";
    cfg.driver = "container";
    cfg.root = t / "root";
    cfg.container_name = "web";
    cfg.runtime_args = {"--runtime", "runc"};
    cfg.run_args = {"--network", "host", "-e", "GREETING=hello world"};
    cfg.command = {"--port", "8080"};
    cfg.stop_timeout_ms = 5000;
    make();
    ASSERT_TRUE(d->cleanup().ok());
  }
  void make() { d = std::make_unique<ContainerDriver>(cfg, runner, clock); }

  // Writes releases/<v>/image.json as stage() would.
  void install(const std::string& v, const std::string& id, int64_t at = 0) {
    nlohmann::json j = {{"sha256", std::string(64, '1')},
                        {"image_id", id},
                        {"image", ""},
                        {"installed_at", at},
                        {"tags", {"localhost/app:" + v}}};
    write_text(cfg.root + "/releases/" + v + "/image.json", j.dump());
  }
  // An image archive as `podman save` writes it (only what the driver reads matters).
  std::string archive(const std::string& id, const std::string& path) {
    std::string src = t / "archive-src";
    write_text(src + "/manifest.json",
               R"([{"Config":")" + id + R"(.json","RepoTags":["localhost/app:v1"],"Layers":["x/layer.tar"]}])");
    write_text(src + "/" + id + ".json", "{}");
    write_text(src + "/x/layer.tar", std::string(1500, 'x'));
    return make_tar(src, path);
  }
};

}  // namespace

TEST(ShellWords, SplitsLikeAShellWithoutExpansion) {
  auto w = split_shell_words(R"(  -p 8080:80 -e "A=b c" -e 'D=$HOME' x\ y "q\"uote" '' )");
  ASSERT_TRUE(w.ok()) << w.error().message;
  std::vector<std::string> want = {"-p", "8080:80", "-e", "A=b c", "-e", "D=$HOME", "x y", "q\"uote", ""};
  EXPECT_EQ(*w, want);
  EXPECT_TRUE(split_shell_words("").ok());
  EXPECT_TRUE(split_shell_words("   ")->empty());
  EXPECT_FALSE(split_shell_words("'open").ok());
  EXPECT_FALSE(split_shell_words("\"open").ok());
  EXPECT_FALSE(split_shell_words("trailing\\").ok());
}

TEST(ShellWords, QuoteRoundTripsThroughSplit) {
  std::vector<std::string> words = {"plain", "with space", "it's", "$(rm -rf /)", "", "a\"b", "--x=1"};
  auto back = split_shell_words(shell_join(words));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, words);
  EXPECT_EQ(shell_quote("--runtime"), "--runtime");
  EXPECT_EQ(shell_quote("a b"), "'a b'");
}

TEST(ImageRefArtifact, AcceptsOnlyReferencesPinnedByDigest) {
  auto r = parse_image_ref_artifact(R"({"gantry_image_ref": 1, "image": "registry.example:5000/team/app@)" + kDigest +
                                    "\"}");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->digest, kDigest);
  EXPECT_FALSE(parse_image_ref_artifact(R"({"gantry_image_ref": 1, "image": "app:latest"})").ok())
      << "a tag is not a pin";
  EXPECT_FALSE(parse_image_ref_artifact(R"({"gantry_image_ref": 1, "image": "app@sha256:abc"})").ok());
  EXPECT_FALSE(parse_image_ref_artifact(R"({"gantry_image_ref": 1, "image": "--privileged@)" + kDigest + "\"}").ok());
  EXPECT_FALSE(parse_image_ref_artifact(R"({"gantry_image_ref": 1, "image": "a b@)" + kDigest + "\"}").ok());
  EXPECT_FALSE(parse_image_ref_artifact(R"({"image": "app@)" + kDigest + "\"}").ok()) << "marker key required";
  EXPECT_FALSE(parse_image_ref_artifact("not json").ok());
}

TEST_F(ContainerFixture, ReadsTheImageIdOfDockerAndOciArchives) {
  archive(kId1, t / "d.tar");
  auto a = read_archive_image(t / "d.tar");
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(a->id, kId1);
  EXPECT_EQ(a->tags, std::vector<std::string>{"localhost/app:v1"});

  std::string man = R"({"schemaVersion":2,"config":{"digest":"sha256:)" + kId2 + R"("},"layers":[]})";
  std::string mdig(64, 'd');
  std::string src = t / "oci";
  write_text(src + "/oci-layout", R"({"imageLayoutVersion":"1.0.0"})");
  write_text(src + "/index.json", R"({"manifests":[{"digest":"sha256:)" + mdig +
                                      R"(","annotations":{"org.opencontainers.image.ref.name":"app:v2"}}]})");
  write_text(src + "/blobs/sha256/" + mdig, man);
  make_tar(src, t / "o.tar");
  auto o = read_archive_image(t / "o.tar");
  ASSERT_TRUE(o.ok()) << o.error().message;
  EXPECT_EQ(o->id, kId2);

  write_text(t / "two/manifest.json", R"([{"Config":")" + kId1 + R"(.json"},{"Config":")" + kId2 + R"(.json"}])");
  make_tar(t / "two", t / "two.tar");
  EXPECT_FALSE(read_archive_image(t / "two.tar").ok()) << "one image per release";
  write_text(t / "plain/bin/app", "x");
  make_tar(t / "plain", t / "plain.tar");
  EXPECT_FALSE(read_archive_image(t / "plain.tar").ok()) << "a binary release is not an image";
}

TEST_F(ContainerFixture, BuildsCommandLinesFromConfig) {
  EXPECT_EQ(d->command({"ps"}), "podman --runtime runc ps");
  auto args = d->run_args("web", "v2", kId1);
  std::string line = d->command(args);
  EXPECT_EQ(line,
            "podman --runtime runc run -d --name web --label gantry.service=web --label gantry.version=v2 "
            "--network host -e 'GREETING=hello world' " +
                kId1 + " --port 8080");
  EXPECT_EQ(d->image_tag("1.2+build@x"), "localhost/gantry/web:1.2_build_x");
}

TEST_F(ContainerFixture, StopFirstStopsTheOldContainerThenRunsTheNewOne) {
  install("v2", kId2);
  runner.on("container inspect --format '{{.Id}}' web.gantry-next", 125, "Error: no such container");
  runner.on("container inspect --format '{{.State.Running}}' web", 0, "true\n");
  ASSERT_TRUE(d->restart("v2").ok()) << runner.all();
  int stop = runner.index("stop -t 5 web");
  int rm = runner.index("rm -f web");
  int run = runner.index("run -d --name web ");
  ASSERT_GE(stop, 0) << runner.all();
  EXPECT_LT(stop, rm);
  EXPECT_LT(rm, run);
  EXPECT_NE(runner.calls[static_cast<size_t>(run)].find(kId2), std::string::npos);
  EXPECT_EQ(runner.index("stop -t 5 web.gantry-next"), -1) << "no leftover to remove";
}

TEST_F(ContainerFixture, StartFirstRunsTheNewContainerBeforeStoppingTheOld) {
  cfg.start_order = "start-first";
  make();
  install("v2", kId2);
  runner.on("container inspect --format '{{.Id}}' web.gantry-next", 125, "Error: no such container", 1);
  runner.on("--format '{{.State.Running}}' web.gantry-next", 0, "true\n");
  ASSERT_TRUE(d->restart("v2").ok()) << runner.all();
  int run = runner.index("run -d --name web.gantry-next");
  int stop = runner.index("stop -t 5 web");
  int rename = runner.index("rename web.gantry-next web");
  ASSERT_GE(run, 0) << runner.all();
  EXPECT_LT(run, stop);
  EXPECT_LT(stop, rename);
}

TEST_F(ContainerFixture, StartFirstRunFailureKeepsTheOldContainerAndReportsTheRuntimesMessage) {
  cfg.start_order = "start-first";
  make();
  install("v2", kId2);
  runner.on("container inspect --format '{{.Id}}' web.gantry-next", 125, "Error: no such container", 1);
  runner.on("run -d --name web.gantry-next", 126,
            "Error: runc: runc create failed: unable to start container process: exec: \"/nope\": no such file\n");
  Status st = d->restart("v2");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("runc create failed"), std::string::npos) << st.error().message;
  EXPECT_EQ(runner.index("stop -t 5 web "), -1) << runner.all();
  EXPECT_EQ(runner.index("rm -f web\n"), -1);
  for (const auto& c : runner.calls)
    EXPECT_EQ(c.find("rm -f web") != std::string::npos && c.find("next") == std::string::npos, false) << c;
}

TEST_F(ContainerFixture, MissingImageFailsBeforeTheOldContainerIsTouched) {
  install("v2", kId2);
  runner.on("image inspect --format '{{.Id}}' " + kId2, 125, "Error: " + kId2 + ": image not known\n");
  Status st = d->restart("v2");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("image not known"), std::string::npos) << st.error().message;
  EXPECT_EQ(runner.index("stop"), -1) << runner.all();
  EXPECT_EQ(runner.index("run -d"), -1);
}

TEST_F(ContainerFixture, MissingRuntimeIsNamed) {
  install("v2", kId2);
  runner.on("podman", 127, "/bin/sh: 1: podman: not found\n");
  Status st = d->restart("v2");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("podman: not found"), std::string::npos) << st.error().message;
}

TEST_F(ContainerFixture, ContainerThatDiesAtOnceIsReportedWithItsLogs) {
  install("v2", kId2);
  runner.on("--format '{{.State.Running}}' web", 0, "false\n");
  runner.on("logs --tail 20 web", 0, "listen: address already in use\n");
  Status st = d->restart("v2");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("address already in use"), std::string::npos) << st.error().message;
}

TEST_F(ContainerFixture, StagesAnArchiveByLoadingItAndCheckingTheImageId) {
  std::string bytes = archive(kId1, t / "v1.tar");
  ReleaseId r{"web", "v1", std::string(64, '1'), bytes.size()};
  write_text(d->artifact_path(r.sha256), bytes);
  runner.on("image inspect --format '{{.Id}}' " + kId1, 0, "sha256:" + kId1 + "\n");
  ASSERT_TRUE(d->stage(r).ok()) << runner.all();
  EXPECT_GE(runner.index("load -q -i " + d->artifact_path(r.sha256)), 0) << runner.all();
  EXPECT_GE(runner.index("tag " + kId1 + " localhost/gantry/web:v1"), 0) << runner.all();
  auto j = nlohmann::json::parse(read_text(cfg.root + "/releases/v1/image.json"));
  EXPECT_EQ(j["image_id"], kId1);
  EXPECT_EQ(j["sha256"], r.sha256);
  EXPECT_FALSE(fs::exists(d->artifact_path(r.sha256))) << "the artifact is gone once loaded";
  EXPECT_TRUE(d->has_release(r));
  ASSERT_TRUE(d->activate("v1").ok());
  EXPECT_EQ(*d->current_version(), "v1");
}

TEST_F(ContainerFixture, ArchiveWhoseLoadedImageDiffersIsRefused) {
  std::string bytes = archive(kId1, t / "v1.tar");
  ReleaseId r{"web", "v1", std::string(64, '1'), bytes.size()};
  write_text(d->artifact_path(r.sha256), bytes);
  runner.on("image inspect --format '{{.Id}}' " + kId1, 0, kId2 + "\n");
  Status st = d->stage(r);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, "digest");
  EXPECT_FALSE(fs::exists(cfg.root + "/releases/v1/image.json"));
}

TEST_F(ContainerFixture, StagesAPinnedReferenceByPullingAndCheckingItsDigest) {
  std::string ref = "registry.example/app@" + kDigest;
  std::string art = R"({"gantry_image_ref": 1, "image": ")" + ref + "\"}";
  ReleaseId r{"web", "v3", std::string(64, '3'), art.size()};
  write_text(d->artifact_path(r.sha256), art);
  runner.on("image inspect --format '{{.Id}}' " + ref, 125, "Error: image not known", 1);
  runner.on("image inspect --format '{{.Id}}' " + ref, 0, kId1 + "\n");
  runner.on("{{range .RepoDigests}}", 0, "registry.example/app@" + kDigest + " \n");
  ASSERT_TRUE(d->stage(r).ok()) << runner.all();
  EXPECT_GE(runner.index("pull " + ref), 0) << runner.all();
  auto j = nlohmann::json::parse(read_text(cfg.root + "/releases/v3/image.json"));
  EXPECT_EQ(j["image"], ref);
  EXPECT_EQ(j["image_id"], kId1);
}

TEST_F(ContainerFixture, PinnedReferenceWithAnotherDigestOrFailedPullIsRefused) {
  std::string ref = "registry.example/app@" + kDigest;
  std::string art = R"({"gantry_image_ref": 1, "image": ")" + ref + "\"}";
  ReleaseId r{"web", "v3", std::string(64, '3'), art.size()};
  write_text(d->artifact_path(r.sha256), art);
  runner.on("image inspect --format '{{.Id}}' " + ref, 0, kId1 + "\n");
  runner.on("{{range .RepoDigests}}", 0, "registry.example/app@sha256:" + std::string(64, 'e') + " \n");
  Status st = d->stage(r);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, "digest") << st.error().message;

  runner.rules.clear();
  runner.on("image inspect --format '{{.Id}}' " + ref, 125, "Error: image not known");
  runner.on("pull " + ref, 125, "Error: initializing source docker://registry.example/app: connection refused\n");
  st = d->stage(r);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("connection refused"), std::string::npos) << st.error().message;
}

TEST_F(ContainerFixture, PrunesOldImagesButNeverKeptOnesOrSharedIds) {
  install("v1", kId1, 1);
  install("v1b", kId2, 2);  // same image as v3
  install("v2", std::string(64, 'f'), 3);
  install("v3", kId2, 4);
  runner.on("image inspect --format '{{.Id}}' localhost/app:v1", 0, kId1 + "\n");
  ASSERT_TRUE(d->prune(2, {"v3"}).ok()) << runner.all();
  EXPECT_FALSE(fs::exists(cfg.root + "/releases/v1"));
  EXPECT_FALSE(fs::exists(cfg.root + "/releases/v1b"));
  EXPECT_TRUE(fs::exists(cfg.root + "/releases/v2"));
  EXPECT_TRUE(fs::exists(cfg.root + "/releases/v3"));
  EXPECT_GE(runner.index("rmi " + kId1), 0) << runner.all();
  EXPECT_GE(runner.index("rmi localhost/app:v1"), 0) << "the archive's own tag, still naming the image";
  EXPECT_EQ(runner.index("rmi " + kId2), -1) << "v3 still uses that image";
  EXPECT_EQ(runner.index("rmi -f"), -1) << "never forced";
}

TEST(ContainerConfig, ParsesAContainerService) {
  TempDir t;
  write_text(t / "a.ini",
             "host_id = h\n[service.web]\ndriver = container\nroot = /srv/web\nruntime = docker\n"
             "runtime_args = --runtime runc\nrun_args = --network host\n"
             "run_args = --ulimit nofile=1024:1024 -e \"MSG=a b\"\ncommand = --port 8080\n"
             "start_order = start-first\nhttp_probe = http://127.0.0.1:8080/health\n");
  std::string path = t / "a.ini";
  const char* argv[] = {"gantry-agent", "--config", path.c_str(), "--state-dir", "/tmp/x"};
  auto p = parse_args(5, argv);
  ASSERT_TRUE(p.ok()) << p.error().message;
  const auto& s = p->config.services.at("web");
  EXPECT_EQ(s.driver, "container");
  EXPECT_EQ(s.runtime, "docker");
  EXPECT_EQ(s.container_name, "web");
  EXPECT_EQ(s.runtime_args, (std::vector<std::string>{"--runtime", "runc"}));
  EXPECT_EQ(s.run_args,
            (std::vector<std::string>{"--network", "host", "--ulimit", "nofile=1024:1024", "-e", "MSG=a b"}));
  EXPECT_EQ(s.command, (std::vector<std::string>{"--port", "8080"}));
  EXPECT_EQ(s.start_order, "start-first");
}

TEST(ContainerConfig, RefusesInconsistentContainerServices) {
  TempDir t;
  auto parse = [&](const std::string& svc) {
    write_text(t / "a.ini", "host_id = h\n[service.web]\nroot = /srv/web\n" + svc);
    std::string path = t / "a.ini";
    const char* argv[] = {"gantry-agent", "--config", path.c_str(), "--state-dir", "/tmp/x"};
    return parse_args(5, argv);
  };
  EXPECT_TRUE(parse("driver = container\n").ok());
  EXPECT_FALSE(parse("driver = container\nrestart_command = true\n").ok());
  EXPECT_FALSE(parse("driver = container\nstart_order = sideways\n").ok());
  EXPECT_FALSE(parse("driver = container\nrun_args = -e 'unterminated\n").ok());
  EXPECT_FALSE(parse("driver = container\ncontainer_name = a+b\n").ok());
  EXPECT_FALSE(parse("driver = container\nstart_order = start-first\nrun_args = -p 8080:80\n").ok())
      << "two instances cannot publish the same host port";
  EXPECT_FALSE(parse("restart_command = true\nrun_args = --network host\n").ok())
      << "container keys need driver = container";
}
