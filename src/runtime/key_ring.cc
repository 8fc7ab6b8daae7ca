#include "uppzy/key_ring.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <set>

#include "uppzy/log.h"

namespace uppzy {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kDirSetting = "UPPZY_API_KEYS_DIR";

std::string Trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  return s.substr(i);
}

// "" for a usable key, else why not (without the setting's name).
std::string KeyTextProblem(const std::string& key) {
  if (std::any_of(key.begin(), key.end(),
                  [](char ch) { return static_cast<unsigned char>(ch) < 0x20 || ch == 0x7F; })) {
    return "the key contains a control character (NUL, tab or a line break inside it)";
  }
  return {};
}

// One key file, trimmed. `problem` (without the setting's name) is set when it cannot serve.
struct KeyFile {
  std::string key;
  std::string problem;
};

KeyFile ReadKeyFile(const std::string& path) {
  KeyFile out;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    out.problem = "cannot read '" + path + "'";
    return out;
  }
  // At most one byte past the bound: /dev/zero or a wrong path to a big file must not be read whole.
  std::string text(kMaxKeyFileBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > kMaxKeyFileBytes) {
    out.problem = "'" + path + "' is larger than " + std::to_string(kMaxKeyFileBytes) +
                  " bytes; it must hold only the key";
    return out;
  }
  out.key = Trim(std::move(text));
  if (out.key.empty()) {
    out.problem = "'" + path + "' is empty";
  } else if (std::string p = KeyTextProblem(out.key); !p.empty()) {
    out.problem = "'" + path + "': " + p;
    out.key.clear();
  }
  return out;
}

// The names in `dir` that may be sites (not starting with '.'), sorted. Sets `error` when the
// directory cannot be listed.
std::vector<std::string> ListDir(const std::string& dir, std::error_code* error) {
  std::vector<std::string> names;
  fs::directory_iterator it(dir, *error);
  for (; !*error && it != fs::directory_iterator(); it.increment(*error)) {
    std::string name = it->path().filename().string();
    if (!name.empty() && name.front() != '.') names.push_back(std::move(name));
  }
  std::sort(names.begin(), names.end());
  return names;
}

// stat() of every source, as text: what CheckForChanges compares.
std::string Stamps(const KeySources& s) {
  std::string out;
  auto add = [&out](const std::string& path) {
    struct stat st {};
    out += path;
    if (::stat(path.c_str(), &st) != 0) {
      out += ":-;";
      return;
    }
    for (long long v :
         {static_cast<long long>(st.st_dev), static_cast<long long>(st.st_ino),
          static_cast<long long>(st.st_size), static_cast<long long>(st.st_mtim.tv_sec),
          static_cast<long long>(st.st_mtim.tv_nsec), static_cast<long long>(st.st_ctim.tv_nsec)}) {
      out += ':' + std::to_string(v);
    }
    out += ';';
  };
  if (!s.key_file.empty()) add(s.key_file);
  if (!s.keys_dir.empty()) {
    add(s.keys_dir);
    std::error_code ec;
    for (const auto& name : ListDir(s.keys_dir, &ec)) add(s.keys_dir + "/" + name);
  }
  return out;
}

}  // namespace

// What one read of every source gave.
struct KeyRing::Snapshot {
  std::map<std::string, Key> keys;            // read cleanly
  std::map<std::string, std::string> failed;  // site -> why its file cannot serve
  std::vector<std::string> problems;          // the others
  bool dir_failed = false;                    // the directory could not be listed or held no site
  std::set<std::string> dir_sites;            // every valid site name in the directory

  std::vector<std::string> AllProblems() const {
    std::vector<std::string> all = problems;
    for (const auto& [site, why] : failed) all.push_back(why);
    return all;
  }

  void Add(const std::string& site, std::string key) {
    Key k;
    k.fingerprint = KeyFingerprint(key);
    k.key = std::move(key);
    keys[site] = std::move(k);
  }

  // The single-site form: UPPZY_API_KEY or UPPZY_API_KEY_FILE for `site`.
  void ReadDefault(const KeySources& s, const std::string& site) {
    if (!s.env_key.empty() && !s.key_file.empty()) {
      problems.push_back("set exactly one of UPPZY_API_KEY and UPPZY_API_KEY_FILE, not both");
    } else if (!s.env_key.empty()) {
      std::string key = Trim(s.env_key);
      if (std::string p = KeyTextProblem(key); !p.empty()) {
        problems.push_back("UPPZY_API_KEY: " + p);
      } else if (!site.empty()) {
        Add(site, std::move(key));
      }
    } else if (!s.key_file.empty()) {
      KeyFile f = ReadKeyFile(s.key_file);
      if (!f.problem.empty()) {
        failed[site] = "UPPZY_API_KEY_FILE: " + f.problem;
      } else if (!site.empty()) {
        Add(site, std::move(f.key));
      }
    }
  }

  // UPPZY_API_KEYS_DIR: one file per site. `default_site` keyed by the single-site form is a conflict.
  void ReadDir(const KeySources& s, const std::string& default_site) {
    const std::string& dir = s.keys_dir;
    const std::string in = std::string(kDirSetting) + ": ";
    std::error_code ec;
    const fs::file_status status = fs::status(dir, ec);
    if (ec || !fs::exists(status)) {
      problems.push_back(in + "'" + dir + "' does not exist");
      dir_failed = true;
      return;
    }
    if (!fs::is_directory(status)) {
      problems.push_back(in + "'" + dir + "' is not a directory");
      dir_failed = true;
      return;
    }
    const std::vector<std::string> names = ListDir(dir, &ec);
    if (ec) {
      problems.push_back(in + "cannot read '" + dir + "' (" + ec.message() + ")");
      dir_failed = true;
      return;
    }
    const bool keyed_by_env = !s.env_key.empty() || !s.key_file.empty();
    for (const std::string& name : names) {
      const std::string path = dir + "/" + name;
      if (!ValidSiteId(name)) {
        problems.push_back(in + "'" + path +
                           "': the file name must be a site_id: 1 to 128 letters, digits, '-', '_' or '.'");
        continue;
      }
      if (!fs::is_regular_file(fs::status(path, ec))) {  // follows links, as Kubernetes' secrets use
        failed[name] = in + "'" + path + "' is not a regular file";
        dir_sites.insert(name);
        continue;
      }
      dir_sites.insert(name);
      if (keyed_by_env && name == default_site) {
        problems.push_back(in + "'" + path + "' keys site '" + name + "', which " +
                           (s.env_key.empty() ? "UPPZY_API_KEY_FILE" : "UPPZY_API_KEY") +
                           " keys too: keep one of them");
        continue;
      }
      KeyFile f = ReadKeyFile(path);
      if (!f.problem.empty()) {
        failed[name] = in + f.problem;
      } else {
        Add(name, std::move(f.key));
      }
    }
    if (dir_sites.empty()) {
      problems.push_back(in + "'" + dir + "' holds no key file (one file per site, named by its site_id)");
      dir_failed = true;
    }
  }

  static Snapshot Read(const KeySources& s, const std::string& default_site) {
    Snapshot snap;
    snap.ReadDefault(s, default_site);
    if (!s.keys_dir.empty()) snap.ReadDir(s, default_site);
    return snap;
  }
};

std::string_view ToString(KeyChange::Kind k) {
  switch (k) {
    case KeyChange::Kind::kAdded:
      return "added";
    case KeyChange::Kind::kRemoved:
      return "removed";
    case KeyChange::Kind::kChanged:
      return "changed";
  }
  return "changed";
}

KeyRing::KeyRing(KeySources sources) : sources_(std::move(sources)) {}

KeyRing::~KeyRing() = default;

KeyRingResult KeyRing::Load(const KeySources& sources) {
  KeyRingResult result;
  std::vector<std::string>& problems = result.problems;
  const bool single = !sources.env_key.empty() || !sources.key_file.empty();
  const bool dir = !sources.keys_dir.empty();
  std::string default_site = sources.default_site;
  if (!default_site.empty() && !ValidSiteId(default_site)) {
    problems.push_back("UPPZY_SITE_ID must be 1 to 128 letters, digits, '-', '_' or '.' (got '" +
                       default_site + "')");
  }
  const std::string stamps = Stamps(sources);  // before reading: a change during the read is seen later
  Snapshot snap = Snapshot::Read(sources, default_site);
  if (!single && !dir)
    problems.push_back("one of UPPZY_API_KEY, UPPZY_API_KEY_FILE or UPPZY_API_KEYS_DIR is required");
  if (default_site.empty()) {
    if (single || !dir) {
      problems.push_back("UPPZY_SITE_ID is required");
    } else if (snap.dir_sites.size() == 1) {
      default_site = *snap.dir_sites.begin();  // the only site is the default
    } else if (!snap.dir_failed) {
      problems.push_back("UPPZY_SITE_ID is required: " + std::string(kDirSetting) + " '" + sources.keys_dir +
                         "' holds " + std::to_string(snap.dir_sites.size()) +
                         " sites, and UPPZY_SITE_ID names the one that serves jobs without a site_id");
    }
  } else if (dir && !single && !snap.dir_failed && snap.dir_sites.count(default_site) == 0) {
    problems.push_back("UPPZY_SITE_ID '" + default_site + "' has no key: add a file named '" + default_site +
                       "' to " + std::string(kDirSetting) + " ('" + sources.keys_dir +
                       "'), or set UPPZY_API_KEY or UPPZY_API_KEY_FILE");
  }
  for (auto& p : snap.AllProblems()) problems.push_back(std::move(p));
  if (!problems.empty()) return result;
  result.ring.reset(new KeyRing(sources));
  result.ring->default_site_ = default_site;
  result.ring->keys_ = std::move(snap.keys);
  result.ring->stamps_ = stamps;
  return result;
}

std::optional<Key> KeyRing::Get(const std::string& site_id) const {
  std::shared_lock lock(mu_);
  auto it = keys_.find(site_id);
  if (it == keys_.end()) return std::nullopt;
  return it->second;
}

std::vector<std::string> KeyRing::Sites() const {
  std::shared_lock lock(mu_);
  std::vector<std::string> sites;
  for (const auto& [site, key] : keys_) sites.push_back(site);
  return sites;
}

std::string KeyRing::DefaultSite() const { return default_site_; }

uint64_t KeyRing::Generation() const {
  std::shared_lock lock(mu_);
  return generation_;
}

KeyReload KeyRing::Reload() {
  std::lock_guard reload_lock(reload_mu_);
  stamps_ = Stamps(sources_);
  Snapshot snap = Snapshot::Read(sources_, default_site_);
  KeyReload result;
  result.problems = std::move(snap.problems);
  const bool default_from_env = !sources_.env_key.empty() || !sources_.key_file.empty();
  std::map<std::string, Key> next = std::move(snap.keys);
  // Only Reload writes keys_, under reload_mu_, which we hold: reading it here needs no lock.
  for (const auto& [site, key] : keys_) {
    if (next.count(site) != 0) continue;
    const std::string kept =
        "; kept the previous key of site '" + site + "' (fingerprint " + key.fingerprint + ")";
    if (auto f = snap.failed.find(site); f != snap.failed.end()) {
      result.problems.push_back(f->second + kept);
      snap.failed.erase(f);
    } else if (snap.dir_failed && !(site == default_site_ && default_from_env)) {
      result.problems.push_back(std::string(kDirSetting) + ": the directory did not read cleanly" + kept);
    } else if (site == default_site_) {
      result.problems.push_back(std::string(kDirSetting) +
                                ": the key file of the default site (UPPZY_SITE_ID) is gone" + kept);
    } else {
      continue;  // its file is gone: the site is removed
    }
    next[site] = key;
  }
  for (auto& [site, why] : snap.failed) result.problems.push_back(std::move(why));  // new sites that failed

  for (const auto& [site, key] : next) {
    auto old = keys_.find(site);
    if (old == keys_.end()) {
      result.changes.push_back({KeyChange::Kind::kAdded, site, "", key.fingerprint});
    } else if (old->second.key != key.key) {
      result.changes.push_back({KeyChange::Kind::kChanged, site, old->second.fingerprint, key.fingerprint});
    }
  }
  for (const auto& [site, key] : keys_) {
    if (next.count(site) == 0)
      result.changes.push_back({KeyChange::Kind::kRemoved, site, key.fingerprint, ""});
  }
  std::unique_lock lock(mu_);
  if (!result.changes.empty()) {
    keys_ = std::move(next);
    ++generation_;
  }
  result.generation = generation_;
  return result;
}

std::optional<KeyReload> KeyRing::CheckForChanges() {
  {
    std::lock_guard reload_lock(reload_mu_);
    if (Stamps(sources_) == stamps_) return std::nullopt;
  }
  return Reload();
}

void LogKeyReload(const KeyReload& reload, std::string_view trigger) {
  for (const KeyChange& c : reload.changes) {
    LogEvent(spdlog::level::info, "api_key_changed",
             {{"trigger", std::string(trigger)},
              {"site_id", c.site_id},
              {"change", std::string(ToString(c.kind))},
              {"old_fingerprint", c.old_fingerprint},
              {"new_fingerprint", c.new_fingerprint},
              {"generation", std::to_string(reload.generation)}});
  }
  for (const std::string& p : reload.problems) {
    LogEvent(spdlog::level::warn, "api_key_reload_problem",
             {{"trigger", std::string(trigger)}, {"problem", p}});
  }
}

}  // namespace uppzy
