// The words of `gantry-coordinator migrate` (coordinator/store/migrate.h).
#include <iostream>
#include <memory>

#include "coordinator/store/etcd_store.h"
#include "coordinator/store/migrate.h"
#include "coordinator/store/sqlite_store.h"

namespace gantry::store {

namespace {

constexpr const char* kUsage =
    "usage: gantry-coordinator migrate --from sqlite:PATH --to etcd://HOST:PORT[,HOST:PORT...]\n"
    "         [--etcd-prefix PREFIX] [--etcd-ca FILE [--etcd-cert FILE --etcd-key FILE]] [--force]\n"
    "Copies the SQLite store at PATH into etcd under PREFIX (default /gantry/). Stop every coordinator\n"
    "first. A PREFIX that already holds a store is refused unless --force (which deletes it first).\n";

}  // namespace

int migrate_main(const std::vector<std::string>& args) {
  std::string from;
  std::string to;
  std::string prefix = kDefaultEtcdPrefix;
  std::string ca;
  std::string cert;
  std::string key;
  bool force = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](std::string& out) {
      if (i + 1 >= args.size()) return false;
      out = args[++i];
      return true;
    };
    bool ok = true;
    if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      return 0;
    } else if (a == "--from") {
      ok = value(from);
    } else if (a == "--to") {
      ok = value(to);
    } else if (a == "--etcd-prefix") {
      ok = value(prefix);
    } else if (a == "--etcd-ca") {
      ok = value(ca);
    } else if (a == "--etcd-cert") {
      ok = value(cert);
    } else if (a == "--etcd-key") {
      ok = value(key);
    } else if (a == "--force") {
      force = true;
    } else {
      std::cerr << "gantry-coordinator migrate: unknown argument " << a << "\n" << kUsage;
      return 2;
    }
    if (!ok) {
      std::cerr << "gantry-coordinator migrate: " << a << " needs a value\n" << kUsage;
      return 2;
    }
  }
  if (from.rfind("sqlite:", 0) != 0 || from.size() == 7) {
    std::cerr << "gantry-coordinator migrate: --from must be sqlite:PATH\n" << kUsage;
    return 2;
  }
  auto cfg = etcd::parse_store_uri(to);
  if (!cfg) {
    std::cerr << "gantry-coordinator migrate: --to: " << cfg.error().message << "\n" << kUsage;
    return 2;
  }
  cfg->ca_file = ca;
  cfg->cert_file = cert;
  cfg->key_file = key;
  cfg->call_timeout_ms = 30000;  // a rollout's slots go in transactions of 1,000 rows
  const std::string path = from.substr(7);

  auto sqlite = SqliteStore::open(path);
  if (!sqlite) {
    std::cerr << "gantry-coordinator migrate: " << sqlite.error().message << "\n";
    return 1;
  }
  auto client = etcd::Client::connect(*cfg);
  if (!client) {
    std::cerr << "gantry-coordinator migrate: " << client.error().message << "\n";
    return 1;
  }
  std::shared_ptr<etcd::Client> shared(std::move(*client));
  auto etcd = EtcdStore::open(shared, prefix);
  if (!etcd) {
    std::cerr << "gantry-coordinator migrate: " << etcd.error().message << "\n";
    return 1;
  }
  auto counts = migrate(**sqlite, path, **etcd, *shared, force);
  if (!counts) {
    std::cerr << "gantry-coordinator migrate: " << counts.error().message << "\n";
    return 1;
  }
  std::cout << "migrated " << path << " to " << to << " under " << (*etcd)->prefix() << ":\n";
  for (const auto& [kind, n] : *counts) std::cout << "  " << kind << ": " << n << "\n";
  return 0;
}

}  // namespace gantry::store
