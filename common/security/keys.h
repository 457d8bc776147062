// Key files: CurveZMQ keypairs (Z85 text) for the transport, ed25519 keypairs (hex text) for
// release signing. Secret key files are created 0600 and refused when group/other can read them.
#pragma once

#include <string>
#include <vector>

#include "common/util/expected.h"

namespace gantry::security {

// A CurveZMQ keypair, both halves as 40-char Z85 text.
struct CurveKeyPair {
  std::string public_z85;
  std::string secret_z85;
};

// A fresh keypair from libzmq (zmq_curve_keypair, which uses libsodium's RNG).
Expected<CurveKeyPair> generate_curve_keypair();

// True for 40 chars of Z85 that decode to 32 bytes.
bool is_z85_key(const std::string& s);

// Writes PREFIX.key (secret, 0600) and PREFIX.pub (public, 0644). Refuses to overwrite either.
Status write_curve_keypair(const std::string& prefix, const CurveKeyPair& kp);

// Reads a secret key file and derives its public half (zmq_curve_public).
Expected<CurveKeyPair> read_curve_secret(const std::string& path);

// Reads a public key file (one Z85 line; a secret key file is refused, so it is not shared by mistake).
Expected<std::string> read_curve_public(const std::string& path);

// An ed25519 keypair for release signing: public 32 bytes, secret 64 bytes (libsodium layout).
struct SigningKeyPair {
  std::string public_key;  // raw bytes
  std::string secret_key;  // raw bytes
};

Expected<SigningKeyPair> generate_signing_keypair();
// PREFIX.key: "ed25519-secret <128 hex>" (0600); PREFIX.pub: "ed25519-public <64 hex>".
Status write_signing_keypair(const std::string& prefix, const SigningKeyPair& kp);
Expected<SigningKeyPair> read_signing_secret(const std::string& path);
// Raw 32-byte public key from a PREFIX.pub file.
Expected<std::string> read_signing_public(const std::string& path);

// Initialises libsodium (once; later calls return at once) before any of its functions is used.
// Aborts if it cannot: without usable randomness nothing safe can follow.
void init_sodium();

std::string to_hex(const std::string& bytes);
// Lowercase or uppercase hex of exactly `bytes` bytes; nullopt-like Error otherwise.
Expected<std::string> from_hex(const std::string& hex, size_t bytes);

// The `keygen --out PREFIX` subcommand shared by gantry, gantry-agent and gantry-coordinator.
// `args` are the words after "keygen". Prints where the files went; returns the exit code.
int curve_keygen_main(const std::string& program, const std::vector<std::string>& args);

}  // namespace gantry::security
