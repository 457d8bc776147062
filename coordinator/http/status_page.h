// The status page served at "/": one self-contained HTML document (inline CSS and script, no
// external assets, so it works on an air-gapped coordinator) that polls /status every 2 s and
// draws the active rollout batch by batch, the past rollouts and the fleet.
#pragma once

#include <string>

namespace gantry::coordinator {

// The page's bytes (UTF-8 HTML), the same for every request.
const std::string& status_page_html();

}  // namespace gantry::coordinator
