// Release artifacts kept by the coordinator: uploaded by operators in chunks, served to
// agents in chunks. Files live in <state-dir>/artifacts/<sha256>.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "common/util/expected.h"

namespace gantry::coordinator {

class ArtifactStore {
 public:
  explicit ArtifactStore(std::string dir);
  ~ArtifactStore();
  ArtifactStore(const ArtifactStore&) = delete;
  ArtifactStore& operator=(const ArtifactStore&) = delete;

  Status init();  // creates the directory

  struct UploadProgress {
    uint64_t received = 0;
    bool complete = false;
    std::string path;  // final path once complete
  };
  // Appends one chunk of an upload. Chunks must arrive in order (offset == bytes so far);
  // a repeated chunk (offset < bytes so far, same end) is accepted idempotently. When the
  // last byte arrives the digest is checked and the file renamed into place.
  Expected<UploadProgress> upload(const std::string& sha256, uint64_t size, uint64_t offset, const std::string& data);

  // Reads up to `length` bytes at `offset` of a complete artifact.
  Expected<std::string> read(const std::string& path, uint64_t offset, uint32_t length);
  // Reads up to `length` bytes at `offset` into `out` (e.g. an outgoing frame); returns how
  // many, fewer only at the end of the file.
  Expected<size_t> read_into(const std::string& path, uint64_t offset, char* out, size_t length);

  std::string path_for(const std::string& sha256) const { return dir_ + "/" + sha256; }
  const std::string& dir() const { return dir_; }
  // Whether the complete artifact is here (files appear only once their digest was checked).
  bool has(const std::string& sha256) const;
  // Its size; error "not_found" when it is not here.
  Expected<uint64_t> size_of(const std::string& sha256) const;

 private:
  std::string dir_;
  std::map<std::string, int> open_fds_;  // path -> fd, for chunk reads
};

}  // namespace gantry::coordinator
