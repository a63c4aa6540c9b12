#pragma once
// Differences between two sorted containers (std::set, or std::map by key), found in one merge
// walk: what a planner needs to re-plan only what changed, and to keep its copy of an input up
// to date without copying thousands of elements for a change of one.

#include <utility>
#include <vector>

namespace pcid {

// Calls `f` with the key of every element in one of `a` and `b` and not the other, or in both
// with different values; true if any.
template <typename C, typename F>
bool ForEachChanged(const C& a, const C& b, F f) {
  auto key = [](const auto& e) -> const auto& {
    if constexpr (requires { e.first; }) {
      return e.first;
    } else {
      return e;
    }
  };
  bool any = false;
  auto i = a.begin();
  auto j = b.begin();
  while (i != a.end() || j != b.end()) {
    if (j == b.end() || (i != a.end() && key(*i) < key(*j))) {
      f(key(*i++));
      any = true;
    } else if (i == a.end() || key(*j) < key(*i)) {
      f(key(*j++));
      any = true;
    } else {
      if (*i != *j) {
        f(key(*i));
        any = true;
      }
      ++i;
      ++j;
    }
  }
  return any;
}

// Makes `kept` equal to `now`, touching only the elements that differ, and calls `f` with each
// one's key; true if any.
template <typename C, typename F>
bool SyncChanged(C& kept, const C& now, F f) {
  std::vector<typename C::key_type> keys;
  ForEachChanged(kept, now, [&keys](const auto& k) { keys.push_back(k); });
  for (const auto& k : keys) {
    f(k);
    auto it = now.find(k);
    if (it == now.end()) {
      kept.erase(k);
    } else if constexpr (requires { typename C::mapped_type; }) {
      kept.insert_or_assign(k, it->second);
    } else {
      kept.insert(*it);
    }
  }
  return !keys.empty();
}

}  // namespace pcid
