#pragma once

// The Prometheus text exposition format (version 0.0.4) by hand, for series whose label sets come
// and go (GPUs, engines, workers): written from a snapshot at scrape time, or parsed from an
// engine's own /metrics and written again with labels added.

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace segma::metrics {

using LabelPairs = std::vector<std::pair<std::string, std::string>>;

// Appends `value` escaped for a label value (backslash, double quote, newline).
void AppendEscapedLabelValue(std::string& out, std::string_view value);
// Appends `{a="1",b="2"}` (nothing for no labels).
void AppendLabels(std::string& out, const LabelPairs& labels);
// Appends a sample value the way Prometheus writes it: integers without a fraction, NaN, +Inf.
void AppendValue(std::string& out, double value);

// Writes families one after another. Each Family() starts a family (HELP and TYPE); its samples
// follow with Sample(). A family must be written in one piece (the format's rule): the caller
// groups its samples.
class TextWriter {
 public:
  explicit TextWriter(std::string& out) : out_(out) {}
  // HELP (unless `help` is empty) and TYPE. `help` must already be escaped (backslash, newline).
  // `type`: "gauge", "counter", "histogram", "summary" or "untyped".
  void Family(std::string_view name, std::string_view type, std::string_view help);
  void Sample(std::string_view name, const LabelPairs& labels, double value);

 private:
  std::string& out_;
};

// One sample of a parsed exposition: `name{labels} value` (timestamps are dropped).
struct ParsedSample {
  std::string name;
  LabelPairs labels;
  double value = 0;
};

// A family of a parsed exposition: its samples in order (a histogram's _bucket, _sum and _count).
struct ParsedFamily {
  std::string name;
  std::string type = "untyped";
  std::string help;
  std::vector<ParsedSample> samples;
};

// Parses the text format leniently, as Prometheus does for what it can read: a sample line that
// cannot be parsed is skipped, and samples without a TYPE line form untyped families of their
// own name. Samples of a family are those after its TYPE whose name is the family's, or the
// family's with _bucket, _sum, _count, _total or _created appended.
std::vector<ParsedFamily> ParseText(std::string_view text);

}  // namespace segma::metrics
