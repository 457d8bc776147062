// The operator command `artifact-chunk` (PROTOCOL.md §6): the bytes of an artifact this
// coordinator holds, for a peer coordinator that lacks it (peer_artifact_fetcher.h). A function
// of its own so that every server of the operator socket answers it alike (the leader's
// OperatorApi, and a standby's, which peers fetch from too).
#pragma once

#include <nlohmann/json.hpp>

#include "common/util/expected.h"
#include "coordinator/server/artifacts.h"

namespace gantry::coordinator {

// The reply's result for `args` {sha256, offset, length}: {"sha256", "offset", "size", "data"
// (binary)}. An error's message is the reply's error text as PROTOCOL.md gives it (code
// "not_found": "not_found: no artifact ..."; "range", "io"; "invalid" for bad arguments).
Expected<nlohmann::json> artifact_chunk(ArtifactStore& artifacts, const nlohmann::json& args);

}  // namespace gantry::coordinator
