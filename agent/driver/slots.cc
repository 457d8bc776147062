#include "agent/driver/slots.h"

#include <charconv>
#include <sstream>

namespace gantry::agent {
namespace {

bool valid_slot_name(const std::string& n) {
  if (n.empty() || n.size() > 16) return false;
  for (char c : n)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return false;
  return true;
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
}

}  // namespace

Expected<std::vector<Slot>> parse_slots(const std::string& text) {
  std::istringstream in(text);
  std::vector<Slot> out;
  std::string word;
  while (in >> word) {
    auto colon = word.find(':');
    Slot s;
    s.name = word.substr(0, colon);
    if (colon == std::string::npos || !valid_slot_name(s.name))
      return make_error("config",
                        "must be two NAME:PORT words (NAME of a-z, 0-9, '_', '-', at most 16), got '" + text + "'");
    const std::string p = word.substr(colon + 1);
    auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), s.port);
    if (ec != std::errc() || end != p.data() + p.size() || s.port < 1 || s.port > 65535)
      return make_error("config", "port of slot '" + s.name + "' must be 1..65535, got '" + p + "'");
    for (const auto& o : out) {
      if (o.name == s.name) return make_error("config", "names slot '" + s.name + "' twice");
      if (o.port == s.port) return make_error("config", "gives port " + p + " to two slots");
    }
    out.push_back(s);
  }
  if (out.size() != 2)
    return make_error("config", "must name exactly two slots (NAME:PORT NAME:PORT), got " + std::to_string(out.size()));
  return out;
}

std::string with_slot(const std::string& text, const Slot& slot) {
  std::string s = text;
  replace_all(s, "{slot}", slot.name);
  replace_all(s, "{port}", std::to_string(slot.port));
  return s;
}

bool names_slot(const std::string& text) {
  return text.find("{slot}") != std::string::npos || text.find("{port}") != std::string::npos;
}

std::string choose_live_slot(const std::vector<Slot>& slots, const std::vector<SlotLink>& links,
                             const std::string& current) {
  if (current.empty()) return "";
  std::string best;
  int64_t best_ns = 0;
  for (size_t i = 0; i < slots.size() && i < links.size(); ++i) {
    if (links[i].version != current) continue;
    if (best.empty() || links[i].made_ns > best_ns) {
      best = slots[i].name;
      best_ns = links[i].made_ns;
    }
  }
  return best;
}

std::string next_slot(const std::vector<Slot>& slots, const std::string& live) {
  if (slots.empty()) return "";
  if (live.empty()) return slots[0].name;
  return other_slot(slots, live);
}

std::string other_slot(const std::vector<Slot>& slots, const std::string& name) {
  for (const auto& s : slots)
    if (s.name != name) return s.name;
  return "";
}

}  // namespace gantry::agent
