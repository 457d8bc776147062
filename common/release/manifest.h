// Signed release manifests: what a release is (service, version, sha256, size, created), signed
// with an offline ed25519 release key. Agents install only what a trusted key signed; the
// coordinator just carries the manifest and its signature along with the order.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/util/expected.h"

namespace gantry::release {

// Marks the bytes as a Gantry release manifest, so a signature made for anything else never verifies as one.
constexpr const char* kManifestType = "gantry-release-manifest/1";
constexpr size_t kMaxManifestBytes = 4096;
constexpr size_t kSignatureHexChars = 128;  // ed25519 signature, hex

struct Manifest {
  std::string service;
  std::string version;
  std::string sha256;   // lowercase hex of the artifact
  uint64_t size = 0;    // artifact bytes
  std::string created;  // UTC, RFC 3339 (information only)

  // The exact bytes that get signed: compact JSON, keys sorted, with the type tag.
  std::string to_bytes() const;
};

// Strict parse of manifest bytes: a JSON object with exactly the known fields, each validated.
// Errors (code "manifest") never throw; safe on any input.
Expected<Manifest> parse_manifest(std::string_view bytes);

// Detached ed25519 signature over `bytes`, as 128 hex chars. `secret_key` is libsodium's 64-byte form.
std::string sign(std::string_view bytes, const std::string& secret_key);

// Checks `signature_hex` over the exact `manifest_bytes` against each trusted public key (raw 32
// bytes), then parses the manifest. Error codes: "unsigned", "signature", "manifest".
Expected<Manifest> verify(std::string_view manifest_bytes, std::string_view signature_hex,
                          const std::vector<std::string>& trusted_keys);

// The manifest describes exactly this release; otherwise an Error (code "mismatch") naming the field.
Status check_matches(const Manifest& m, const std::string& service, const std::string& version,
                     const std::string& sha256, uint64_t size);

// Current UTC time as RFC 3339 (for `created`).
std::string utc_now_rfc3339();

}  // namespace gantry::release
