#include "common/release/manifest.h"

#include <sodium.h>

#include <ctime>
#include <nlohmann/json.hpp>

#include "common/security/keys.h"
#include "common/util/names.h"

namespace gantry::release {

std::string Manifest::to_bytes() const {
  nlohmann::json j = {{"type", kManifestType}, {"service", service}, {"version", version},
                      {"sha256", sha256},      {"size", size},       {"created", created}};
  return j.dump();  // nlohmann's object is a std::map: keys come out sorted, no whitespace
}

Expected<Manifest> parse_manifest(std::string_view bytes) {
  auto bad = [](const std::string& why) { return make_error("manifest", "bad release manifest: " + why); };
  if (bytes.size() > kMaxManifestBytes) return bad("larger than " + std::to_string(kMaxManifestBytes) + " bytes");
  nlohmann::json j = nlohmann::json::parse(bytes.begin(), bytes.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return bad("not valid JSON");
  if (!j.is_object()) return bad("not a JSON object");
  static const char* kKeys[] = {"type", "service", "version", "sha256", "size", "created"};
  if (j.size() != std::size(kKeys))
    return bad("expected exactly the fields type, service, version, sha256, size, created");
  for (const char* k : kKeys)
    if (!j.contains(k)) return bad(std::string("missing field ") + k);
  for (const char* k : {"type", "service", "version", "sha256", "created"})
    if (!j[k].is_string()) return bad(std::string("field ") + k + " is not a string");
  if (!j["size"].is_number_unsigned()) return bad("field size is not an unsigned integer");
  if (j["type"].get<std::string>() != kManifestType) return bad("type is not " + std::string(kManifestType));
  Manifest m;
  m.service = j["service"].get<std::string>();
  m.version = j["version"].get<std::string>();
  m.sha256 = j["sha256"].get<std::string>();
  m.size = j["size"].get<uint64_t>();
  m.created = j["created"].get<std::string>();
  if (!is_safe_name(m.service)) return bad("service is not a safe name");
  if (!is_safe_name(m.version)) return bad("version is not a safe name");
  if (!is_sha256_hex(m.sha256)) return bad("sha256 is not 64 lowercase hex digits");
  if (m.size > (1ULL << 40)) return bad("size is out of range");
  if (m.created.size() > 64) return bad("created is too long");
  for (char c : m.created)
    if (c < 0x20 || c > 0x7e) return bad("created has non-printable characters");
  return m;
}

std::string sign(std::string_view bytes, const std::string& secret_key) {
  security::init_sodium();
  unsigned char sig[crypto_sign_BYTES];
  crypto_sign_detached(sig, nullptr, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(),
                       reinterpret_cast<const unsigned char*>(secret_key.data()));
  return security::to_hex(std::string(reinterpret_cast<char*>(sig), sizeof sig));
}

Expected<Manifest> verify(std::string_view manifest_bytes, std::string_view signature_hex,
                          const std::vector<std::string>& trusted_keys) {
  if (manifest_bytes.empty() || signature_hex.empty())
    return make_error("unsigned", "release is not signed (no manifest and signature came with the order)");
  if (manifest_bytes.size() > kMaxManifestBytes) return make_error("manifest", "release manifest is too large");
  security::init_sodium();
  auto sig = security::from_hex(std::string(signature_hex), crypto_sign_BYTES);
  if (!sig) return make_error("signature", "release signature is malformed: " + sig.error().message);
  bool ok = false;
  for (const auto& k : trusted_keys) {
    if (k.size() != crypto_sign_PUBLICKEYBYTES) continue;
    if (crypto_sign_verify_detached(reinterpret_cast<const unsigned char*>(sig->data()),
                                    reinterpret_cast<const unsigned char*>(manifest_bytes.data()),
                                    manifest_bytes.size(), reinterpret_cast<const unsigned char*>(k.data())) == 0) {
      ok = true;
      break;
    }
  }
  if (!ok) return make_error("signature", "release signature does not verify with any trusted release key");
  return parse_manifest(manifest_bytes);
}

Status check_matches(const Manifest& m, const std::string& service, const std::string& version,
                     const std::string& sha256, uint64_t size) {
  if (m.service != service)
    return make_error("mismatch", "signed manifest is for service '" + m.service + "', not '" + service + "'");
  if (m.version != version)
    return make_error("mismatch", "signed manifest is for version '" + m.version + "', not '" + version + "'");
  if (m.sha256 != sha256)
    return make_error("mismatch", "artifact digest " + sha256 + " differs from the signed manifest's " + m.sha256);
  if (m.size != size)
    return make_error("mismatch", "artifact size " + std::to_string(size) + " differs from the signed manifest's " +
                                      std::to_string(m.size));
  return Status::Ok();
}

std::string utc_now_rfc3339() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace gantry::release
