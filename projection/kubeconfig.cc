#include "projection/kubeconfig.h"

#include <absl/strings/escaping.h>
#include <absl/strings/numbers.h>
#include <absl/strings/str_cat.h>
#include <absl/strings/strip.h>
#include <simdjson.h>

#include "core/status.h"
#include "core/text_file.h"

namespace pcid::projection {
namespace {

struct Line {
  int indent;
  std::string text;  // without indentation and comment
  int number;        // 1-based, for messages
};

// Drops a comment: '#' at the start or after white space, outside quotes.
std::string StripComment(std::string_view s) {
  char quote = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (quote) {
      if (c == quote) quote = 0;
      continue;
    }
    if (c == '"' || c == '\'') quote = c;
    if (c == '#' && (i == 0 || s[i - 1] == ' ' || s[i - 1] == '\t')) s = s.substr(0, i);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return std::string(s);
}

absl::Status Bad(const Line& l, std::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("line ", l.number, ": ", ToAbsl(why)));
}

absl::StatusOr<YamlNode> Scalar(const Line& l, std::string_view v) {
  YamlNode n;
  if (v == "{}") {
    n.kind = YamlNode::Kind::kMap;
    return n;
  }
  if (v == "[]") {
    n.kind = YamlNode::Kind::kSeq;
    return n;
  }
  if (v == "~" || v == "null") return n;
  if (!v.empty() && (v[0] == '{' || v[0] == '[' || v[0] == '|' || v[0] == '>' || v[0] == '&' ||
                     v[0] == '*' || v[0] == '!')) {
    return Bad(l, "unsupported YAML (flow collection, block scalar, anchor or tag)");
  }
  n.kind = YamlNode::Kind::kScalar;
  if (v.size() >= 2 && v.front() == '\'' && v.back() == '\'') {
    std::string_view in = v.substr(1, v.size() - 2);
    for (size_t i = 0; i < in.size(); ++i) {
      n.scalar += in[i];
      if (in[i] == '\'' && i + 1 < in.size() && in[i + 1] == '\'') ++i;
    }
  } else if (v.size() >= 2 && v.front() == '"' && v.back() == '"') {
    std::string err;
    if (!absl::CUnescape(ToAbsl(v.substr(1, v.size() - 2)), &n.scalar, &err)) {
      return Bad(l, absl::StrCat("bad escape in a quoted string: ", err));
    }
  } else if (!v.empty() && (v.front() == '"' || v.front() == '\'')) {
    return Bad(l, "unterminated quoted string");
  } else {
    n.scalar = std::string(v);
  }
  return n;
}

// "key: value" / "key:" -> key, value; false when the line is no mapping entry.
bool SplitKey(std::string_view text, std::string& key, std::string_view& value) {
  size_t colon = std::string_view::npos;
  if (!text.empty() && (text[0] == '"' || text[0] == '\'')) {
    const size_t end = text.find(text[0], 1);
    if (end == std::string_view::npos || end + 1 >= text.size() || text[end + 1] != ':') {
      return false;
    }
    key = std::string(text.substr(1, end - 1));
    colon = end + 1;
  } else {
    for (size_t i = 0; i < text.size(); ++i) {
      if (text[i] == ':' && (i + 1 == text.size() || text[i + 1] == ' ')) {
        colon = i;
        break;
      }
    }
    if (colon == std::string_view::npos) return false;
    key = std::string(text.substr(0, colon));
  }
  value = text.substr(colon + 1);
  while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  return true;
}

class Parser {
 public:
  explicit Parser(std::vector<Line> lines) : lines_(std::move(lines)) {}

  absl::StatusOr<YamlNode> Document() {
    if (lines_.empty()) return YamlNode{};
    PCID_ASSIGN_OR_RETURN(YamlNode n, Block(lines_[0].indent, 0));
    if (pos_ != lines_.size()) return Bad(lines_[pos_], "unexpected indentation");
    return n;
  }

 private:
  bool IsItem(const Line& l) const { return l.text == "-" || l.text.rfind("- ", 0) == 0; }

  absl::StatusOr<YamlNode> Block(int indent, int depth) {
    if (depth > 64) return Bad(lines_[pos_], "nested too deeply");
    return IsItem(lines_[pos_]) ? Sequence(indent, depth) : Mapping(indent, depth);
  }

  absl::StatusOr<YamlNode> Sequence(int indent, int depth) {
    YamlNode n;
    n.kind = YamlNode::Kind::kSeq;
    while (pos_ < lines_.size() && lines_[pos_].indent == indent && IsItem(lines_[pos_])) {
      Line& l = lines_[pos_];
      std::string rest = l.text.size() > 1 ? l.text.substr(2) : "";
      size_t skip = 0;
      while (skip < rest.size() && rest[skip] == ' ') ++skip;
      rest = rest.substr(skip);
      if (rest.empty()) {
        ++pos_;
        if (pos_ < lines_.size() && lines_[pos_].indent > indent) {
          PCID_ASSIGN_OR_RETURN(YamlNode item, Block(lines_[pos_].indent, depth + 1));
          n.seq.push_back(std::move(item));
        } else {
          n.seq.emplace_back();
        }
        continue;
      }
      std::string key;
      std::string_view value;
      if (SplitKey(rest, key, value) || rest == "-" || rest.rfind("- ", 0) == 0) {
        // "- key: v": the item is a block starting on this line, indented past the dash.
        l.indent = indent + 2 + static_cast<int>(skip);
        l.text = rest;
        PCID_ASSIGN_OR_RETURN(YamlNode item, Block(l.indent, depth + 1));
        n.seq.push_back(std::move(item));
      } else {
        PCID_ASSIGN_OR_RETURN(YamlNode item, Scalar(l, rest));
        n.seq.push_back(std::move(item));
        ++pos_;
      }
    }
    return n;
  }

  absl::StatusOr<YamlNode> Mapping(int indent, int depth) {
    YamlNode n;
    n.kind = YamlNode::Kind::kMap;
    while (pos_ < lines_.size() && lines_[pos_].indent == indent && !IsItem(lines_[pos_])) {
      const Line& l = lines_[pos_];
      std::string key;
      std::string_view value;
      if (!SplitKey(l.text, key, value)) {
        if (n.map.empty() && depth == 0) {
          PCID_ASSIGN_OR_RETURN(YamlNode s, Scalar(l, l.text));
          ++pos_;
          return s;
        }
        return Bad(l, "want \"key: value\"");
      }
      for (const auto& [k, v] : n.map) {
        if (k == key) return Bad(l, absl::StrCat("duplicate key \"", key, "\""));
      }
      ++pos_;
      YamlNode child;
      if (!value.empty()) {
        PCID_ASSIGN_OR_RETURN(child, Scalar(l, value));
      } else if (pos_ < lines_.size() && lines_[pos_].indent > indent) {
        PCID_ASSIGN_OR_RETURN(child, Block(lines_[pos_].indent, depth + 1));
      } else if (pos_ < lines_.size() && lines_[pos_].indent == indent && IsItem(lines_[pos_])) {
        PCID_ASSIGN_OR_RETURN(child, Sequence(indent, depth + 1));  // a list at the key's level
      }
      n.map.push_back({std::move(key), std::move(child)});
    }
    return n;
  }

  std::vector<Line> lines_;
  size_t pos_ = 0;
};

YamlNode FromJson(simdjson::dom::element e) {
  YamlNode n;
  simdjson::dom::object obj;
  simdjson::dom::array arr;
  std::string_view str;
  if (!e.get(obj)) {
    n.kind = YamlNode::Kind::kMap;
    for (auto [k, v] : obj) n.map.push_back({std::string(k), FromJson(v)});
  } else if (!e.get(arr)) {
    n.kind = YamlNode::Kind::kSeq;
    for (simdjson::dom::element v : arr) n.seq.push_back(FromJson(v));
  } else if (!e.get(str)) {
    n.kind = YamlNode::Kind::kScalar;
    n.scalar = std::string(str);
  } else if (!e.is_null()) {
    n.kind = YamlNode::Kind::kScalar;
    n.scalar = simdjson::minify(e);
  }
  return n;
}

const YamlNode* Named(const YamlNode* list, const std::string& name, std::string_view inner) {
  if (list == nullptr) return nullptr;
  for (const YamlNode& item : list->seq) {
    if (item.Str("name") == name) return item.Get(inner);
  }
  return nullptr;
}

// Kubeconfigs, CA bundles and tokens are small; anything larger is not one.
constexpr size_t kMaxFile = 1 << 20;

absl::StatusOr<std::string> ReadText(const std::string& path) {
  return ReadTextFile(path, kMaxFile);
}

// Inline base64 data, or a file (relative to `dir`), or "".
absl::StatusOr<std::string> DataOrFile(const YamlNode& node, std::string_view data_key,
                                       std::string_view file_key, const std::string& dir,
                                       const std::string& where) {
  if (std::string data = node.Str(data_key); !data.empty()) {
    std::string out;
    if (!absl::Base64Unescape(data, &out)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": ", ToAbsl(data_key), " is not base64"));
    }
    return out;
  }
  std::string file = node.Str(file_key);
  if (file.empty()) return std::string();
  if (file[0] != '/') file = absl::StrCat(dir, "/", file);
  return ReadText(file);
}

absl::Status ParseServer(std::string_view url_std, KubeConfig& c) {
  const absl::string_view url = ToAbsl(url_std);
  absl::string_view rest = url;
  if (absl::ConsumePrefix(&rest, "https://")) {
    c.https = true;
    c.port = 443;
  } else if (absl::ConsumePrefix(&rest, "http://")) {
    c.https = false;
    c.port = 80;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("server \"", url, "\": want https://HOST[:PORT]"));
  }
  while (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (rest.find('/') != std::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("server \"", url, "\": a path prefix is not supported"));
  }
  absl::string_view host = rest;
  if (!rest.empty() && rest.front() == '[') {  // [::1]:6443
    const size_t end = rest.find(']');
    if (end == std::string_view::npos)
      return absl::InvalidArgumentError(absl::StrCat("server \"", url, "\""));
    host = rest.substr(1, end - 1);
    rest = rest.substr(end + 1);
    if (!rest.empty() && !absl::ConsumePrefix(&rest, ":")) {
      return absl::InvalidArgumentError(absl::StrCat("server \"", url, "\""));
    }
  } else if (const size_t colon = rest.rfind(':'); colon != absl::string_view::npos) {
    host = rest.substr(0, colon);
    rest = rest.substr(colon + 1);
  } else {
    rest = {};
  }
  if (!rest.empty() && (!absl::SimpleAtoi(rest, &c.port) || c.port <= 0 || c.port > 65535)) {
    return absl::InvalidArgumentError(absl::StrCat("server \"", url, "\": bad port"));
  }
  if (host.empty())
    return absl::InvalidArgumentError(absl::StrCat("server \"", url, "\": no host"));
  c.host = std::string(host);
  if (!c.https && c.host != "127.0.0.1" && c.host != "localhost" && c.host != "::1") {
    return absl::InvalidArgumentError(absl::StrCat(
        "server \"", url, "\": plain http only to a loopback address (TLS is always verified)"));
  }
  return absl::OkStatus();
}

}  // namespace

const YamlNode* YamlNode::Get(std::string_view key) const {
  if (kind != Kind::kMap) return nullptr;
  for (const auto& [k, v] : map) {
    if (k == key) return &v;
  }
  return nullptr;
}

std::string YamlNode::Str(std::string_view key) const {
  const YamlNode* n = Get(key);
  return n && n->kind == Kind::kScalar ? n->scalar : "";
}

absl::StatusOr<YamlNode> ParseYaml(std::string_view text) {
  size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string_view::npos && text[first] == '{') {
    simdjson::dom::parser parser;
    simdjson::dom::element root;
    if (auto err = parser.parse(text.data(), text.size()).get(root); err) {
      return absl::InvalidArgumentError(
          absl::StrCat("not valid JSON: ", simdjson::error_message(err)));
    }
    return FromJson(root);
  }
  std::vector<Line> lines;
  int number = 0;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view raw = text.substr(start, end - start);
    start = end + 1;
    ++number;
    if (raw.find('\t') != std::string_view::npos && raw.find_first_not_of('\t') != 0) {
      // A tab inside a value is fine; indentation by tabs is not YAML.
      if (raw.find_first_not_of(" \t") != std::string_view::npos &&
          raw.substr(0, raw.find_first_not_of(" \t")).find('\t') != std::string_view::npos) {
        return absl::InvalidArgumentError(absl::StrCat("line ", number, ": tab in indentation"));
      }
    }
    const size_t indent = raw.find_first_not_of(' ');
    if (indent == std::string_view::npos) continue;
    std::string body = StripComment(raw.substr(indent));
    if (body.empty() || body == "---") continue;
    lines.push_back({static_cast<int>(indent), std::move(body), number});
  }
  return Parser(std::move(lines)).Document();
}

absl::StatusOr<KubeConfig> ParseKubeconfig(std::string_view text, const std::string& path) {
  auto fail = [&](const absl::Status& st) {
    return absl::Status(st.code(), absl::StrCat("kubeconfig ", path, ": ", st.message()));
  };
  auto doc = ParseYaml(text);
  if (!doc.ok()) return fail(doc.status());
  const std::string context_name = doc->Str("current-context");
  if (context_name.empty()) return fail(absl::InvalidArgumentError("no current-context"));
  const YamlNode* context = Named(doc->Get("contexts"), context_name, "context");
  if (context == nullptr) {
    return fail(
        absl::InvalidArgumentError(absl::StrCat("context \"", context_name, "\" not found")));
  }
  const std::string cluster_name = context->Str("cluster"), user_name = context->Str("user");
  const YamlNode* cluster = Named(doc->Get("clusters"), cluster_name, "cluster");
  if (cluster == nullptr) {
    return fail(
        absl::InvalidArgumentError(absl::StrCat("cluster \"", cluster_name, "\" not found")));
  }
  KubeConfig c;
  c.origin = absl::StrCat("kubeconfig ", path, " (context ", context_name, ")");
  if (auto st = ParseServer(cluster->Str("server"), c); !st.ok()) return fail(st);
  if (cluster->Str("insecure-skip-tls-verify") == "true") {
    return fail(absl::InvalidArgumentError(
        "insecure-skip-tls-verify is not supported: TLS is always verified (give the CA)"));
  }
  const std::string dir =
      path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
  auto ca =
      DataOrFile(*cluster, "certificate-authority-data", "certificate-authority", dir, "cluster");
  if (!ca.ok()) return fail(ca.status());
  c.ca_pem = *ca;
  const YamlNode* user = Named(doc->Get("users"), user_name, "user");
  if (user != nullptr) {
    if (user->Get("exec") || user->Get("auth-provider")) {
      return fail(absl::InvalidArgumentError(
          absl::StrCat("user \"", user_name,
                       "\": exec and auth-provider plugins are not supported; use a "
                       "token or a client certificate")));
    }
    c.token = user->Str("token");
    c.token_file = user->Str("tokenFile");
    if (!c.token_file.empty() && c.token_file[0] != '/')
      c.token_file = absl::StrCat(dir, "/", c.token_file);
    auto cert = DataOrFile(*user, "client-certificate-data", "client-certificate", dir, "user");
    auto key = DataOrFile(*user, "client-key-data", "client-key", dir, "user");
    if (!cert.ok()) return fail(cert.status());
    if (!key.ok()) return fail(key.status());
    c.client_cert_pem = *cert;
    c.client_key_pem = *key;
    if (c.client_cert_pem.empty() != c.client_key_pem.empty()) {
      return fail(absl::InvalidArgumentError(
          "a client certificate needs its key, and the other way round"));
    }
  }
  return c;
}

absl::StatusOr<KubeConfig> LoadKubeconfig(const std::string& path) {
  PCID_ASSIGN_OR_RETURN(std::string text, ReadText(path));
  return ParseKubeconfig(text, path);
}

absl::StatusOr<KubeConfig> InClusterConfig(const std::function<const char*(const char*)>& getenv,
                                           const std::string& sa_dir) {
  const char* host = getenv("KUBERNETES_SERVICE_HOST");
  const char* port = getenv("KUBERNETES_SERVICE_PORT");
  if (host == nullptr || port == nullptr || *host == '\0') {
    return absl::NotFoundError("not in a cluster (no KUBERNETES_SERVICE_HOST)");
  }
  KubeConfig c;
  c.origin = "in-cluster service account";
  const std::string h = host;
  const std::string url =
      absl::StrCat("https://", h.find(':') != std::string::npos ? "[" + h + "]" : h, ":", port);
  PCID_RETURN_IF_ERROR(ParseServer(url, c));
  c.token_file = sa_dir + "/token";
  PCID_ASSIGN_OR_RETURN(c.ca_pem, ReadText(sa_dir + "/ca.crt"));
  return c;
}

}  // namespace pcid::projection
