#include "core/metrics.h"

#include <absl/strings/str_cat.h>
#include <absl/strings/str_format.h>

#include <algorithm>
#include <cmath>

namespace pcid::metrics {
namespace {

std::string Number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return absl::StrCat(static_cast<int64_t>(v));
  return absl::StrFormat("%.9g", v);
}

// HELP text escapes backslash and newline; label values also the double quote.
std::string Escape(std::string_view text, bool quote) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && quote) {
      out += "\\\"";
    } else {
      out += c;
    }
  }
  return out;
}

const char* TypeName(Type type) {
  switch (type) {
    case Type::kCounter:
      return "counter";
    case Type::kGauge:
      return "gauge";
    case Type::kHistogram:
      return "histogram";
  }
  return "untyped";
}

}  // namespace

DurationHistogram::DurationHistogram(std::vector<double> bounds_seconds)
    : bounds_(std::move(bounds_seconds)),
      buckets_(std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1)) {}

void DurationHistogram::Observe(std::chrono::nanoseconds d) {
  const double seconds = std::chrono::duration<double>(d).count();
  const size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), seconds) - bounds_.begin();
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_ns_.fetch_add(static_cast<uint64_t>(std::max<int64_t>(0, d.count())),
                    std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
}

DurationHistogram::Snapshot DurationHistogram::Read() const {
  Snapshot s;
  uint64_t running = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    s.cumulative.push_back(running);
  }
  // A scrape racing an Observe may see the bucket before the count: the +Inf bucket and the
  // count must agree, so the count is the buckets' total.
  s.count = running;
  s.sum_seconds = static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / 1e9;
  return s;
}

std::vector<double> LatencyBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
}

std::string LabelText(const std::vector<std::string>& names, const LabelValues& values,
                      const std::pair<std::string, std::string>* extra) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < values.size(); ++i) {
    absl::StrAppend(&out, out.empty() ? "" : ",", names[i], "=\"", Escape(values[i], true), "\"");
  }
  if (extra) {
    absl::StrAppend(&out, out.empty() ? "" : ",", extra->first, "=\"", extra->second, "\"");
  }
  return out.empty() ? out : absl::StrCat("{", out, "}");
}

std::unique_ptr<Registry::Entry> Registry::NewEntry(std::string name, std::string help, Type type,
                                                    std::vector<std::string> labels) {
  auto e = std::make_unique<Entry>();
  e->name = std::move(name);
  e->help = std::move(help);
  e->type = type;
  e->label_names = std::move(labels);
  return e;
}

void Registry::Keep(std::unique_ptr<Entry> entry) {
  MutexLock lock(&mu_);
  entries_.push_back(std::move(entry));
}

Family<Counter>& Registry::AddCounter(std::string name, std::string help,
                                      std::vector<std::string> label_names) {
  auto e = NewEntry(std::move(name), std::move(help), Type::kCounter, std::move(label_names));
  e->counters = std::make_unique<Family<Counter>>(e->label_names.size());
  Family<Counter>& out = *e->counters;
  Keep(std::move(e));
  return out;
}

Family<Gauge>& Registry::AddGauge(std::string name, std::string help,
                                  std::vector<std::string> label_names) {
  auto e = NewEntry(std::move(name), std::move(help), Type::kGauge, std::move(label_names));
  e->gauges = std::make_unique<Family<Gauge>>(e->label_names.size());
  Family<Gauge>& out = *e->gauges;
  Keep(std::move(e));
  return out;
}

Family<DurationHistogram>& Registry::AddHistogram(std::string name, std::string help,
                                                  std::vector<std::string> label_names,
                                                  std::vector<double> bounds) {
  auto e = NewEntry(std::move(name), std::move(help), Type::kHistogram, std::move(label_names));
  e->histograms = std::make_unique<Family<DurationHistogram>>(e->label_names.size(), bounds);
  Family<DurationHistogram>& out = *e->histograms;
  Keep(std::move(e));
  return out;
}

void Registry::AddCollector(std::string name, std::string help, Type type,
                            std::vector<std::string> label_names,
                            std::function<Samples()> collect) {
  auto e = NewEntry(std::move(name), std::move(help), type, std::move(label_names));
  e->collect = std::move(collect);
  Keep(std::move(e));
}

std::string Registry::Render() const {
  std::string out;
  MutexLock lock(&mu_);
  for (const auto& e : entries_) {
    absl::StrAppend(&out, "# HELP ", e->name, " ", Escape(e->help, false), "\n# TYPE ", e->name,
                    " ", TypeName(e->type), "\n");
    auto line = [&](const std::string& name, const LabelValues& values, double v,
                    const std::pair<std::string, std::string>* extra = nullptr) {
      absl::StrAppend(&out, name, LabelText(e->label_names, values, extra), " ", Number(v), "\n");
    };
    if (e->counters) {
      e->counters->ForEach([&](const LabelValues& v, const Counter& c) {
        line(e->name, v, static_cast<double>(c.value()));
      });
    } else if (e->gauges) {
      e->gauges->ForEach(
          [&](const LabelValues& v, const Gauge& g) { line(e->name, v, g.value()); });
    } else if (e->histograms) {
      e->histograms->ForEach([&](const LabelValues& v, const DurationHistogram& h) {
        const DurationHistogram::Snapshot s = h.Read();
        for (size_t i = 0; i < s.cumulative.size(); ++i) {
          const std::pair<std::string, std::string> le{
              "le", i < h.bounds().size() ? Number(h.bounds()[i]) : "+Inf"};
          line(e->name + "_bucket", v, static_cast<double>(s.cumulative[i]), &le);
        }
        line(e->name + "_sum", v, s.sum_seconds);
        line(e->name + "_count", v, static_cast<double>(s.count));
      });
    } else if (e->collect) {
      for (const auto& [values, v] : e->collect()) line(e->name, values, v);
    }
  }
  return out;
}

}  // namespace pcid::metrics
