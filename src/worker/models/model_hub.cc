#include "worker/models/model_hub.h"

#include <fnmatch.h>

#include <algorithm>

#include <fmt/format.h>

#include "common/json.h"

namespace segma::worker::models {

namespace {

// Percent-encodes everything but RFC 3986 unreserved characters (and '/' when `keep_slash`).
std::string Encode(std::string_view s, bool keep_slash) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' ||
        (keep_slash && c == '/')) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

bool SafeRelativePath(std::string_view p) {
  if (p.empty() || p.front() == '/' || p.find('\0') != std::string_view::npos) return false;
  size_t start = 0;
  while (start <= p.size()) {
    size_t end = p.find('/', start);
    if (end == std::string_view::npos) end = p.size();
    std::string_view part = p.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return false;
    start = end + 1;
  }
  return true;
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string BaseName(std::string_view path) {
  size_t slash = path.rfind('/');
  return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         Lower(std::string(s.substr(s.size() - suffix.size()))) == suffix;
}

// Config, tokenizer and vocabulary files a directory engine reads beside the weights.
bool IsSidecar(std::string_view path) {
  const std::string name = BaseName(path);
  if (path.find('/') != std::string_view::npos) return false;  // sub-folders hold other things
  return EndsWith(name, ".json") || name == "tokenizer.model" || EndsWith(name, ".tiktoken") ||
         name == "merges.txt" || name == "vocab.txt";
}

std::string Names(const std::vector<RemoteFile>& files, size_t max = 8) {
  std::string out;
  for (size_t i = 0; i < files.size() && i < max; ++i) {
    if (i) out += ", ";
    out += files[i].path;
  }
  if (files.size() > max) out += fmt::format(" and {} more", files.size() - max);
  return out.empty() ? "no files" : out;
}

}  // namespace

std::string_view HubName(Hub h) { return h == Hub::kHuggingFace ? "huggingface" : "modelscope"; }

std::string ListingUrl(Hub hub, std::string_view endpoint, std::string_view repo,
                       std::string_view revision) {
  if (hub == Hub::kHuggingFace) {
    return fmt::format("{}/api/models/{}/revision/{}?blobs=true", endpoint, Encode(repo, true),
                       Encode(revision, false));
  }
  return fmt::format("{}/api/v1/models/{}/repo/files?Revision={}&Recursive=true", endpoint,
                     Encode(repo, true), Encode(revision, false));
}

std::string FileUrl(Hub hub, std::string_view endpoint, std::string_view repo,
                    std::string_view revision, std::string_view path) {
  if (hub == Hub::kHuggingFace) {
    return fmt::format("{}/{}/resolve/{}/{}", endpoint, Encode(repo, true), Encode(revision, false),
                       Encode(path, true));
  }
  return fmt::format("{}/api/v1/models/{}/repo?Revision={}&FilePath={}", endpoint,
                     Encode(repo, true), Encode(revision, false), Encode(path, false));
}

Result<std::vector<RemoteFile>> ParseListing(Hub hub, std::string_view body) {
  ASSIGN_OR_RETURN(json::value v, ParseJson(body));
  if (!v.is_object()) return InvalidArgumentError("hub listing is not a JSON object");
  const json::object& o = v.as_object();
  std::vector<RemoteFile> out;
  auto text = [](const json::object& f, std::string_view key) -> std::string {
    auto it = f.find(key);
    return it != f.end() && it->value().is_string() ? std::string(it->value().as_string()) : "";
  };
  auto number = [](const json::object& f, std::string_view key) -> int64_t {
    auto it = f.find(key);
    if (it == f.end()) return -1;
    if (it->value().is_int64()) return it->value().as_int64();
    if (it->value().is_uint64()) return static_cast<int64_t>(it->value().as_uint64());
    return -1;
  };
  if (hub == Hub::kHuggingFace) {
    auto siblings = o.find("siblings");
    if (siblings == o.end() || !siblings->value().is_array()) {
      return InvalidArgumentError("Hugging Face listing without \"siblings\"");
    }
    for (const json::value& s : siblings->value().as_array()) {
      if (!s.is_object()) continue;
      const json::object& f = s.as_object();
      RemoteFile file;
      file.path = text(f, "rfilename");
      file.size = number(f, "size");
      if (auto lfs = f.find("lfs"); lfs != f.end() && lfs->value().is_object()) {
        file.sha256 = Lower(text(lfs->value().as_object(), "sha256"));
        if (int64_t n = number(lfs->value().as_object(), "size"); n >= 0) file.size = n;
      }
      out.push_back(std::move(file));
    }
  } else {
    auto success = o.find("Success");
    if (success != o.end() && success->value().is_bool() && !success->value().as_bool()) {
      return NotFoundError("ModelScope: " + text(o, "Message"));
    }
    auto data = o.find("Data");
    if (data == o.end() || !data->value().is_object() ||
        !data->value().as_object().contains("Files") ||
        !data->value().as_object().at("Files").is_array()) {
      return InvalidArgumentError("ModelScope listing without Data.Files");
    }
    for (const json::value& s : data->value().as_object().at("Files").as_array()) {
      if (!s.is_object()) continue;
      const json::object& f = s.as_object();
      if (text(f, "Type") == "tree") continue;
      RemoteFile file;
      file.path = text(f, "Path");
      if (file.path.empty()) file.path = text(f, "Name");
      file.size = number(f, "Size");
      file.sha256 = Lower(text(f, "Sha256"));
      out.push_back(std::move(file));
    }
  }
  for (const RemoteFile& f : out) {
    if (!SafeRelativePath(f.path)) {
      return InvalidArgumentError("hub listing names an unsafe path '" + f.path + "'");
    }
  }
  std::sort(out.begin(), out.end(),
            [](const RemoteFile& a, const RemoteFile& b) { return a.path < b.path; });
  return out;
}

bool GlobMatches(std::string_view pattern, std::string_view path) {
  const std::string p(pattern);
  const std::string subject = p.find('/') == std::string::npos ? BaseName(path) : std::string(path);
  return fnmatch(p.c_str(), subject.c_str(), 0) == 0;
}

Result<FileSelection> SelectFiles(const std::vector<RemoteFile>& listing, std::string_view glob,
                                  std::string_view backend) {
  FileSelection sel;
  std::vector<RemoteFile> gguf, safetensors, bin, sidecars;
  for (const RemoteFile& f : listing) {
    if (EndsWith(f.path, ".gguf")) gguf.push_back(f);
    if (EndsWith(f.path, ".safetensors")) safetensors.push_back(f);
    if (EndsWith(f.path, ".bin") && BaseName(f.path).find("model") != std::string::npos) {
      bin.push_back(f);
    }
    if (IsSidecar(f.path)) sidecars.push_back(f);
  }
  if (!glob.empty()) {
    for (const RemoteFile& f : listing) {
      if (GlobMatches(glob, f.path)) sel.files.push_back(f);
    }
    if (sel.files.empty()) {
      return NotFoundError(fmt::format("no file of the repository matches '{}' (it holds {})", glob,
                                       Names(listing)));
    }
    std::sort(sel.files.begin(), sel.files.end(),
              [](const RemoteFile& a, const RemoteFile& b) { return a.path < b.path; });
    if (EndsWith(sel.files.front().path, ".gguf")) {
      sel.format = "gguf";
      sel.model_file = sel.files.front().path;
      return sel;
    }
    sel.format = "safetensors";
  } else {
    const bool want_gguf =
        backend == "llama.cpp" || (backend.empty() && !gguf.empty() && safetensors.empty());
    if (want_gguf) {
      if (gguf.empty()) {
        return NotFoundError("the repository has no .gguf file for llama.cpp (it holds " +
                             Names(listing) + ")");
      }
      if (gguf.size() > 1) {
        return InvalidArgumentError(fmt::format(
            "the repository has {} .gguf files ({}): set source.file to the one to serve",
            gguf.size(), Names(gguf)));
      }
      sel.format = "gguf";
      sel.model_file = gguf.front().path;
      sel.files = gguf;
      return sel;
    }
    sel.files = !safetensors.empty() ? safetensors : bin;
    if (sel.files.empty()) {
      return NotFoundError("the repository has no *.safetensors or model *.bin weights (it holds " +
                           Names(listing) + ")");
    }
    sel.format = "safetensors";
  }
  for (const RemoteFile& s : sidecars) {
    if (std::none_of(sel.files.begin(), sel.files.end(),
                     [&](const RemoteFile& f) { return f.path == s.path; })) {
      sel.files.push_back(s);
    }
  }
  return sel;
}

}  // namespace segma::worker::models
