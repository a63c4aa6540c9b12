// libFuzzer target: the pci.ids / usb.ids parser and its lookups must accept any bytes.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/id_database.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const pcid::IdDatabase db =
      pcid::IdDatabase::Parse(std::string(reinterpret_cast<const char*>(data), size));
  // Look up keys taken from the input itself, so found and missing entries both get exercised.
  for (size_t i = 0; i + 4 <= size && i < 64; i += 4) {
    const uint16_t a = static_cast<uint16_t>(data[i] << 8 | data[i + 1]);
    const uint16_t b = static_cast<uint16_t>(data[i + 2] << 8 | data[i + 3]);
    (void)db.Vendor(a);
    (void)db.Device(a, b);
    (void)db.Class(static_cast<uint8_t>(a));
    (void)db.Subclass(static_cast<uint8_t>(a), static_cast<uint8_t>(b));
  }
  return 0;
}
