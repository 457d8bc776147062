// What the HA tests (issue 23) read back: fields of JSON answers that may be missing (a
// coordinator that did not answer gives null), and, from an agent's log, to check the two promises a
// failover must keep on every host: no order runs twice, and nothing a deposed leader sends is
// acted on once the agent has heard from a newer one. Header-only; pure text parsing.
//
// The agent's log lines these rely on (agent/net/session.cc, agent/core/order_intake.cc,
// agent/core/epochs.cc):
//   connecting to tcp://H:P as HOST                          a new connection (one at a time)
//   welcomed by the coordinator (epoch N, ...)               that connection's coordinator
//   coordinator epoch N (was M), from ...                    the journaled highest epoch rose
//   accepted order ID: ...                                   the order starts on this host
//   ... refused, sent by a deposed coordinator: stale epoch N < M
#pragma once

#include <cstdint>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace gantry::testing {

// j[key] when j is an object holding a string / an unsigned number there; "" / 0 otherwise.
inline std::string text_of(const nlohmann::json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : "";
}
inline uint64_t number_of(const nlohmann::json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_number_unsigned() ? j[key].get<uint64_t>() : 0;
}

// How many times each order id was accepted (started) in one agent log.
inline std::map<std::string, int> accepted_order_counts(const std::string& log) {
  std::map<std::string, int> n;
  static const std::regex re("accepted order ([A-Za-z0-9_.:-]+):");
  for (auto it = std::sregex_iterator(log.begin(), log.end(), re); it != std::sregex_iterator(); ++it)
    n[(*it)[1].str()]++;
  return n;
}

// One agent log read as a timeline of connections and epochs.
struct EpochTimeline {
  uint64_t highest = 0;   // the highest epoch the log shows the agent has seen
  int accepted = 0;       // orders accepted
  int refused_stale = 0;  // messages refused as a deposed coordinator's
  // Orders accepted over a connection whose coordinator's epoch (its Welcome's) was lower than
  // one the agent had already seen: acted on for a deposed leader. Each entry names the line.
  std::vector<std::string> violations;
  std::vector<uint64_t> welcome_epochs;  // in order, one per welcomed connection
};

// An order is accepted over the connection it came in on: the agent talks to one coordinator at
// a time, and the Welcome of that connection says whose epoch it is. The check does not take
// the agent's word for the order's epoch: it compares the connection's coordinator with every
// epoch the agent had seen before (Welcomes, raises).
inline EpochTimeline read_epoch_timeline(const std::string& log) {
  static const std::regex connecting("connecting to (\\S+) as ");
  static const std::regex welcomed("welcomed by the coordinator \\(epoch ([0-9]+)");
  static const std::regex raised("coordinator epoch ([0-9]+) \\(was ([0-9]+)\\)");
  static const std::regex accepted("accepted order ([A-Za-z0-9_.:-]+):");
  static const std::regex refused("refused, sent by a deposed coordinator: stale epoch");
  EpochTimeline t;
  uint64_t session = 0;  // the current connection's epoch; 0 until it is welcomed
  std::string endpoint;
  std::istringstream in(log);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    std::smatch m;
    if (std::regex_search(line, m, connecting)) {
      session = 0;
      endpoint = m[1].str();
    } else if (std::regex_search(line, m, welcomed)) {
      session = std::stoull(m[1].str());
      t.welcome_epochs.push_back(session);
      if (session < t.highest)
        t.violations.push_back("line " + std::to_string(n) + ": welcomed by epoch " + m[1].str() + " after epoch " +
                               std::to_string(t.highest) + ": " + line);
      t.highest = std::max(t.highest, session);
    } else if (std::regex_search(line, m, raised)) {
      t.highest = std::max(t.highest, static_cast<uint64_t>(std::stoull(m[1].str())));
    } else if (std::regex_search(line, m, accepted)) {
      ++t.accepted;
      if (session < t.highest)
        t.violations.push_back("line " + std::to_string(n) + ": order " + m[1].str() + " accepted over " + endpoint +
                               " (epoch " + std::to_string(session) + ") after the agent had seen epoch " +
                               std::to_string(t.highest) + ": " + line);
    } else if (std::regex_search(line, refused)) {
      ++t.refused_stale;
    }
  }
  return t;
}

}  // namespace gantry::testing
