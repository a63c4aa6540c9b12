#pragma once
// Differences between two sorted containers (std::set, or std::map by key), found in one merge
// walk: what a planner needs to re-plan only what changed, and to keep its copy of an input up
// to date without copying thousands of elements for a change of one.

#include <utility>
#include <vector>

namespace pcid {

// Calls `f` with the key of every element in one of `a` and `b` and not the other, or in both
// with different values.
template <typename C, typename F>
void ForEachChanged(const C& a, const C& b, F f) {
  auto key = [](const auto& e) -> const auto& {
    if constexpr (requires { e.first; }) {
      return e.first;
    } else {
      return e;
    }
  };
  auto i = a.begin();
  auto j = b.begin();
  while (i != a.end() || j != b.end()) {
    if (j == b.end() || (i != a.end() && key(*i) < key(*j))) {
      f(key(*i++));
    } else if (i == a.end() || key(*j) < key(*i)) {
      f(key(*j++));
    } else {
      if (*i != *j) f(key(*i));
      ++i;
      ++j;
    }
  }
}

// Makes `kept`'s element at `key` what `now` has there (absent, or the same value); true if that
// changed `kept`.
template <typename C>
bool CopyElement(C& kept, const C& now, const typename C::key_type& key) {
  auto from = now.find(key);
  auto to = kept.find(key);
  if (from == now.end()) {
    if (to == kept.end()) return false;
    kept.erase(to);
    return true;
  }
  if (to != kept.end() && *to == *from) return false;
  if constexpr (requires { typename C::mapped_type; }) {
    kept.insert_or_assign(key, from->second);
  } else {
    kept.insert(*from);
  }
  return true;
}

// Makes `kept` equal to `now`, touching only the elements that differ, and calls `f` with each
// one's key.
template <typename C, typename F>
void SyncChanged(C& kept, const C& now, F f) {
  std::vector<typename C::key_type> keys;
  ForEachChanged(kept, now, [&keys](const auto& k) { keys.push_back(k); });
  for (const auto& k : keys) {
    f(k);
    CopyElement(kept, now, k);
  }
}

}  // namespace pcid
