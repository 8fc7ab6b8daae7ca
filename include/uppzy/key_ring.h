// KeyRing: the API key of every Uppzy site this worker serves, re-read when its files change, so a key
// is rotated without a restart (issue 10, "Keys stay out of the database", "Key rotation without a
// restart"). Implemented in src/runtime/key_ring.cc.
//
// Where keys come from (KeySources, read by LoadConfig into Config::keys):
// - the single-site form: UPPZY_SITE_ID with UPPZY_API_KEY (fixed for the life of the process) or
//   UPPZY_API_KEY_FILE (re-read by Reload);
// - UPPZY_API_KEYS_DIR: one file per site, named by its site_id and holding its key, the way a
//   Kubernetes secret mounts. Names starting with '.' are ignored (Kubernetes' `..data` and
//   `..2024_…` entries); symbolic links are followed to regular files.
// UPPZY_SITE_ID names the default site (jobs whose site_id is NULL). With a keys directory it may be
// left unset when the directory holds exactly one site, which is then the default.
//
// A key never leaves the ring but through Get() (for the X-API-Key header): problems, changes and
// logs carry file names, site ids and fingerprints (KeyFingerprint), never key text.
//
// Thread-safety: every method may be called from any thread at any time. Get, Sites, DefaultSite and
// Generation take a shared lock and never touch the disk. Reload and CheckForChanges read the disk
// without holding that lock and serialize among themselves. Nothing here throws but std::bad_alloc.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "uppzy/config.h"

namespace uppzy {

// One site's key.
struct Key {
  std::string key;          // sent as X-API-Key; never logged, never stored
  std::string fingerprint;  // KeyFingerprint(key): safe to log and store
};

// What one Reload changed for one site.
struct KeyChange {
  enum class Kind { kAdded, kRemoved, kChanged };
  Kind kind = Kind::kAdded;
  std::string site_id;
  std::string old_fingerprint;  // "" for kAdded
  std::string new_fingerprint;  // "" for kRemoved
};

// "added", "removed", "changed".
std::string_view ToString(KeyChange::Kind k);

// The result of Reload (and of a CheckForChanges that reloaded).
struct KeyReload {
  std::vector<KeyChange> changes;
  // Each names its setting and file. A site whose file failed keeps its previous key; a problem says so.
  std::vector<std::string> problems;
  uint64_t generation = 0;  // Generation() after the reload
};

class KeyRing;

struct KeyRingResult {
  std::unique_ptr<KeyRing> ring;      // null when problems is not empty
  std::vector<std::string> problems;  // every problem at once, each naming its setting
};

class KeyRing {
 public:
  // Reads every source. Refuses (ring null, problems set): UPPZY_API_KEY with UPPZY_API_KEY_FILE; no
  // key source at all; UPPZY_SITE_ID missing (unless the directory holds exactly one site) or without
  // a key; a keys directory that is missing, not a directory, unreadable or without any key file; a
  // file name that is not a valid site_id (ValidSiteId), or that names no regular file; a key file
  // that is empty, larger than kMaxKeyFileBytes or holds a control character inside the key; a site
  // keyed both by UPPZY_API_KEY(_FILE) and by a file of the directory.
  static KeyRingResult Load(const KeySources& sources);

  ~KeyRing();
  KeyRing(const KeyRing&) = delete;
  KeyRing& operator=(const KeyRing&) = delete;

  // The key of `site_id`, or nullopt when this worker holds none.
  std::optional<Key> Get(const std::string& site_id) const;
  // Every site with a key, sorted.
  std::vector<std::string> Sites() const;
  // UPPZY_SITE_ID, or the directory's only site: the site of jobs whose site_id is NULL. Never changes.
  std::string DefaultSite() const;
  // Starts at 1 and grows by one with every Reload that changed anything.
  uint64_t Generation() const;

  // Re-reads the key file and the directory (UPPZY_API_KEY cannot change). Applies what read cleanly:
  // a new file adds its site, a file gone removes its site, a changed file changes the key. A file
  // that fails (empty or half written, too large, unreadable) keeps its site's previous key, and a
  // directory that fails keeps every key it gave; the default site is never removed. Each of those is
  // a problem in the result.
  KeyReload Reload();

  // Cheap: stat() of the key file, the directory and each file read last time (size, mtime, inode,
  // following links; the directory's own mtime sees files added, removed and Kubernetes' rename of
  // `..data`). Reloads when any differs and returns the reload; nullopt when nothing moved. Meant to
  // be called about every second.
  std::optional<KeyReload> CheckForChanges();

 private:
  struct Snapshot;
  explicit KeyRing(KeySources sources);

  const KeySources sources_;
  std::string default_site_;
  mutable std::shared_mutex mu_;  // guards keys_ and generation_
  std::map<std::string, Key> keys_;
  uint64_t generation_ = 1;
  std::mutex reload_mu_;  // one Reload / CheckForChanges at a time; guards stamps_
  std::string stamps_;    // what CheckForChanges compares: the stat() of every source, as text
};

// Logs one line per change (`api_key_changed`: site, kind, fingerprints) and one per problem
// (`api_key_reload_problem`), with `trigger` (e.g. "SIGHUP", "file_change", "unauthorized").
void LogKeyReload(const KeyReload& reload, std::string_view trigger);

}  // namespace uppzy
