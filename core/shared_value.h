#pragma once
// A value that its copies share until one of them changes it.

#include <memory>
#include <utility>

namespace pcid {

// PciDevice's names (four strings from the ID database) are copied with every inventory the
// reconciler publishes, thousands of functions at a time: shared, such a copy allocates nothing
// for them. Compares by value, as the plain value would.
template <typename T>
class SharedValue {
 public:
  SharedValue() = default;
  SharedValue(T value) : p_(std::make_shared<T>(std::move(value))) {}  // NOLINT: stands for a T

  const T& operator*() const { return p_ ? *p_ : Empty(); }
  const T* operator->() const { return &**this; }
  // For changing it in place: first a copy of its own when another holds this one.
  T& Mutable() {
    if (!p_) {
      p_ = std::make_shared<T>();
    } else if (p_.use_count() > 1) {
      p_ = std::make_shared<T>(*p_);
    }
    return *p_;
  }

  friend bool operator==(const SharedValue& a, const SharedValue& b) {
    return a.p_ == b.p_ || *a == *b;
  }

 private:
  static const T& Empty() {
    static const T kEmpty;  // immutable: what a default-constructed one reads as
    return kEmpty;
  }
  std::shared_ptr<T> p_;
};

}  // namespace pcid
