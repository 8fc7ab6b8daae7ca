// UppzyClient: the Uppzy API over one libcurl multi handle, driven by the engine's thread.
//
// Requests wait in our own FIFO and are handed to curl only while a connection is free (HTTP/1.1) or a
// stream is (HTTP/2): curl counts time spent queued for a connection against CURLOPT_TIMEOUT_MS, so a
// transfer must not start its clock before it can be sent. Over https we hand curl more than one
// transfer per connection only once an answer came over HTTP/2: against an HTTP/1.1-only server,
// 100 x connections transfers in curl would spend their timeout waiting for a connection.
#include <arpa/inet.h>
#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <climits>
#include <cstring>
#include <deque>
#include <iterator>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "uppzy/json_text.h"  // Dump: invalid UTF-8 in caller text is replaced, never thrown
#include "uppzy/upstream.h"

#ifndef UPPZY_VERSION
#define UPPZY_VERSION "dev"
#endif

namespace uppzy {
namespace {

using nlohmann::json;

// HTTP/2 streams per connection we allow in flight over https once the server speaks HTTP/2 (curl's
// default stream cap is 100).
constexpr int kStreamsPerConnection = 100;

using SteadyClock = std::chrono::steady_clock;

void GlobalInitOnce() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct CurlUrlDeleter {
  void operator()(CURLU* u) const { curl_url_cleanup(u); }
};
struct CurlStringDeleter {
  void operator()(char* s) const { curl_free(s); }
};
using CurlString = std::unique_ptr<char, CurlStringDeleter>;

// One URL part, or "" when absent.
std::string UrlPart(CURLU* url, CURLUPart part) {
  char* raw = nullptr;
  if (curl_url_get(url, part, &raw, 0) != CURLUE_OK || raw == nullptr) return {};
  CurlString owned(raw);
  return owned.get();
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

// 127.0.0.0/8, ::1 (bracketed, as URLs carry it) or localhost.
bool IsLoopback(std::string host) {
  if (EqualsIgnoreCase(host, "localhost")) return true;
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
    in6_addr a6{};
    return inet_pton(AF_INET6, host.c_str(), &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
  }
  in_addr a4{};
  return inet_pton(AF_INET, host.c_str(), &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

// RFC 3986 percent-encoding of one path segment: everything but unreserved characters.
std::string EscapeSegment(const std::string& s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
        c == '_' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xF]);
    }
  }
  return out;
}

bool StartsWithIgnoreCase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && EqualsIgnoreCase(s.substr(0, prefix.size()), prefix);
}

// A header value curl can send as given: no line break, no NUL.
bool HeaderSafe(const std::string& value) {
  return value.find_first_of(std::string("\r\n\0", 3)) == std::string::npos;
}

// Longest Retry-After value we keep; anything sane is far shorter.
constexpr size_t kMaxRetryAfterBytes = 128;

}  // namespace

std::string CheckBaseUrl(const std::string& base_url) {
  const std::string name = "UPPZY_BASE_URL";
  if (base_url.empty()) return name + " is empty; expected e.g. https://api.uppzy.com/api/v1";
  std::unique_ptr<CURLU, CurlUrlDeleter> url(curl_url());
  if (!url) return name + ": out of memory while parsing";
  CURLUcode rc = curl_url_set(url.get(), CURLUPART_URL, base_url.c_str(), CURLU_NON_SUPPORT_SCHEME);
  if (rc != CURLUE_OK) {
    return name + " is not a valid absolute URL (" + curl_url_strerror(rc) +
           "); expected e.g. https://api.uppzy.com/api/v1";
  }
  const std::string scheme = UrlPart(url.get(), CURLUPART_SCHEME);
  const std::string host = UrlPart(url.get(), CURLUPART_HOST);
  if (scheme != "https" && scheme != "http") {
    return name + " must start with https:// (http:// only for a loopback host), got scheme '" + scheme + "'";
  }
  if (host.empty()) return name + " has no host";
  if (!UrlPart(url.get(), CURLUPART_USER).empty() || !UrlPart(url.get(), CURLUPART_PASSWORD).empty()) {
    return name + " must not carry user info (the API key goes in UPPZY_API_KEY)";
  }
  if (!UrlPart(url.get(), CURLUPART_QUERY).empty() || !UrlPart(url.get(), CURLUPART_FRAGMENT).empty()) {
    return name + " must not have a query or fragment";
  }
  if (scheme == "http" && !IsLoopback(host)) {
    return name + " uses http:// to '" + host +
           "', which is not a loopback host; use https:// (http:// is allowed only for 127.0.0.0/8, [::1] "
           "and localhost)";
  }
  return {};
}

struct UppzyClient::Impl {
  // One request from Start* to its Completion. Owned by the queue, then by `active`.
  struct Exchange {
    uint64_t tag = 0;
    RequestKind kind = RequestKind::kSubmit;
    std::string url;
    bool post = false;
    std::string body;               // POST body; curl reads it in place (CURLOPT_POSTFIELDS)
    curl_slist* headers = nullptr;  // this exchange's: its site's X-API-Key (+ Idempotency-Key)
    std::string key;                // the X-API-Key sent, redacted from every text of the answer
    std::string response;
    std::string retry_after;
    bool truncated = false;
    size_t limit = 0;
    SteadyClock::time_point queued_at;
    char errbuf[CURL_ERROR_SIZE] = {};

    ~Exchange() { curl_slist_free_all(headers); }
  };

  UpstreamConfig config;
  std::string base;  // base_url without trailing slashes
  bool https = false;
  bool loopback = false;
  bool multiplexing = false;  // an answer came over HTTP/2 (https only)
  long max_active = 1;
  double waited_seconds = 0;
  uint64_t answered = 0;
  double answered_seconds = 0;
  CURLM* multi = nullptr;
  std::deque<std::unique_ptr<Exchange>> queued;
  std::unordered_map<CURL*, std::unique_ptr<Exchange>> active;
  std::vector<CURL*> idle_easy;   // reset handles, ready for the next exchange
  std::vector<Completion> ready;  // finished without a transfer (could not start)

  explicit Impl(const UpstreamConfig& c) : config(c) {
    if (std::string problem = CheckBaseUrl(c.base_url); !problem.empty())
      throw std::invalid_argument(problem);
    if (!HeaderSafe(c.api_key)) throw std::invalid_argument("UPPZY_API_KEY contains a line break or NUL");
    base = c.base_url;
    while (!base.empty() && base.back() == '/') base.pop_back();
    https = StartsWithIgnoreCase(base, "https://");
    {
      std::unique_ptr<CURLU, CurlUrlDeleter> url(curl_url());
      if (url && curl_url_set(url.get(), CURLUPART_URL, base.c_str(), 0) == CURLUE_OK)
        loopback = IsLoopback(UrlPart(url.get(), CURLUPART_HOST));
    }
    config.max_connections = std::max(1, c.max_connections);
    config.max_response_bytes = std::max(0L, c.max_response_bytes);
    max_active = config.max_connections;  // raised when the server turns out to speak HTTP/2

    GlobalInitOnce();
    multi = curl_multi_init();
    if (multi == nullptr) throw std::runtime_error("curl_multi_init failed");
    curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, static_cast<long>(config.max_connections));
    curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, static_cast<long>(config.max_connections));
    curl_multi_setopt(multi, CURLMOPT_PIPELINING, https ? CURLPIPE_MULTIPLEX : CURLPIPE_NOTHING);
  }

  ~Impl() { Release(); }

  void Release() {
    for (auto& [easy, ex] : active) {
      curl_multi_remove_handle(multi, easy);
      curl_easy_cleanup(easy);
    }
    active.clear();
    for (CURL* easy : idle_easy) curl_easy_cleanup(easy);
    idle_easy.clear();
    if (multi != nullptr) curl_multi_cleanup(multi);
    multi = nullptr;
  }

  // The exchange's own header list: its site's key, then `first` (e.g. Idempotency-Key) when given.
  // nullptr when out of memory.
  static curl_slist* BuildHeaders(const Exchange& ex, const std::string& first) {
    // curl sends "Name;" as an empty header; "Name:" would remove it.
    const std::string key_line = ex.key.empty() ? "X-API-Key;" : "X-API-Key: " + ex.key;
    std::vector<const char*> lines;
    if (!first.empty()) lines.push_back(first.c_str());
    lines.push_back(key_line.c_str());
    lines.push_back("Accept: application/json");
    if (ex.post) {
      lines.push_back("Content-Type: application/json");
      lines.push_back("Expect:");  // turns off 100-continue round trips
    }
    curl_slist* list = nullptr;
    for (const char* line : lines) {
      curl_slist* next = curl_slist_append(list, line);
      if (next == nullptr) {
        curl_slist_free_all(list);
        return nullptr;
      }
      list = next;
    }
    return list;
  }

  std::string SiteUrl(const std::string& site) const { return base + "/m2m/sites/" + EscapeSegment(site); }

  // Gives the exchange its site's key and headers and queues it; a site without a usable key ends it
  // at once (kUnauthorized, nothing sent).
  void Enqueue(std::unique_ptr<Exchange> ex, const std::string& site, const std::string& first_header = {}) {
    if (config.key_lookup) {
      std::optional<std::string> key = config.key_lookup(site);
      if (!key || !HeaderSafe(*key)) {
        const std::string why = key ? "the API key of site '" + site + "' contains a line break or NUL"
                                    : "this worker holds no API key for site '" + site + "'";
        ready.push_back(Completion{ex->tag, ex->kind, Outcome::Of(OutcomeKind::kUnauthorized, 0, why)});
        return;
      }
      ex->key = std::move(*key);
    } else {
      ex->key = config.api_key;
    }
    ex->headers = BuildHeaders(*ex, first_header);
    if (ex->headers == nullptr) {
      FailNow(*ex, "out of memory building request headers");
      return;
    }
    ex->limit = static_cast<size_t>(config.max_response_bytes);
    ex->queued_at = SteadyClock::now();
    queued.push_back(std::move(ex));
    StartQueued();
  }

  void FailNow(const Exchange& ex, std::string why) {
    ready.push_back(Completion{ex.tag, ex.kind, Outcome::Of(OutcomeKind::kNetwork, 0, std::move(why))});
  }

  // Moves queued exchanges into curl while there is room. Returns how many started.
  size_t StartQueued() {
    size_t started = 0;
    const SteadyClock::time_point now = queued.empty() ? SteadyClock::time_point() : SteadyClock::now();
    while (!queued.empty() && static_cast<long>(active.size()) < max_active) {
      std::unique_ptr<Exchange> ex = std::move(queued.front());
      queued.pop_front();
      waited_seconds += std::chrono::duration<double>(now - ex->queued_at).count();
      CURL* easy = AcquireEasy();
      if (easy == nullptr) {
        FailNow(*ex, "could not create a curl handle");
        continue;
      }
      CURLcode rc = Configure(easy, *ex);
      if (rc != CURLE_OK) {
        FailNow(*ex, std::string("could not configure the request: ") + curl_easy_strerror(rc));
        RecycleEasy(easy);
        continue;
      }
      CURLMcode mrc = curl_multi_add_handle(multi, easy);
      if (mrc != CURLM_OK) {
        FailNow(*ex, std::string("could not start the request: ") + curl_multi_strerror(mrc));
        RecycleEasy(easy);
        continue;
      }
      active.emplace(easy, std::move(ex));
      ++started;
    }
    return started;
  }

  CURL* AcquireEasy() {
    if (!idle_easy.empty()) {
      CURL* easy = idle_easy.back();
      idle_easy.pop_back();
      return easy;
    }
    return curl_easy_init();
  }

  // Back to the free list with options cleared; live connections stay in the multi handle's pool.
  void RecycleEasy(CURL* easy) {
    curl_easy_reset(easy);
    idle_easy.push_back(easy);
  }

  static size_t OnBody(char* data, size_t size, size_t count, void* user) {
    auto* ex = static_cast<Exchange*>(user);
    const size_t n = size * count;
    if (n > ex->limit - std::min(ex->limit, ex->response.size())) {
      ex->truncated = true;
      return 0;  // aborts the transfer: CURLE_WRITE_ERROR
    }
    ex->response.append(data, n);
    return n;
  }

  static size_t OnHeader(char* data, size_t size, size_t count, void* user) {
    auto* ex = static_cast<Exchange*>(user);
    const size_t n = size * count;
    std::string_view line(data, n);
    if (StartsWithIgnoreCase(line, "HTTP/")) {
      ex->retry_after.clear();  // a new response (after 1xx): only its headers count
    } else if (StartsWithIgnoreCase(line, "retry-after:")) {
      std::string_view value = line.substr(std::strlen("retry-after:"));
      ex->retry_after.assign(value.substr(0, std::min(value.size(), kMaxRetryAfterBytes)));
    }
    return n;
  }

  CURLcode Configure(CURL* easy, Exchange& ex) {
    CURLcode rc = CURLE_OK;
    auto check = [&rc](CURLcode c) {
      if (rc == CURLE_OK) rc = c;
    };
    check(curl_easy_setopt(easy, CURLOPT_URL, ex.url.c_str()));
    check(curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https"));
    check(curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L));
    check(curl_easy_setopt(easy, CURLOPT_TCP_NODELAY, 1L));
    check(curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L));
    if (config.connect_timeout_ms > 0) {
      check(curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, config.connect_timeout_ms));
    }
    if (config.total_timeout_ms > 0)
      check(curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, config.total_timeout_ms));
    check(curl_easy_setopt(easy, CURLOPT_MAXFILESIZE_LARGE,
                           static_cast<curl_off_t>(config.max_response_bytes)));
    check(curl_easy_setopt(easy, CURLOPT_USERAGENT, "uppzy-worker/" UPPZY_VERSION));
    check(curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, ex.errbuf));
    check(curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &Impl::OnBody));
    check(curl_easy_setopt(easy, CURLOPT_WRITEDATA, &ex));
    check(curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, &Impl::OnHeader));
    check(curl_easy_setopt(easy, CURLOPT_HEADERDATA, &ex));
    if (loopback) check(curl_easy_setopt(easy, CURLOPT_PROXY, ""));  // never via an env proxy
    if (!config.ca_file.empty()) check(curl_easy_setopt(easy, CURLOPT_CAINFO, config.ca_file.c_str()));
    if (https) {
      // Optional: a libcurl without HTTP/2 still works over HTTP/1.1.
      curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_2TLS));
      curl_easy_setopt(easy, CURLOPT_PIPEWAIT, 1L);
    } else {
      check(curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1)));
    }
    if (ex.post) {
      check(curl_easy_setopt(easy, CURLOPT_POST, 1L));
      check(curl_easy_setopt(easy, CURLOPT_POSTFIELDS, ex.body.data()));
      check(curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(ex.body.size())));
    } else {
      check(curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L));
    }
    check(curl_easy_setopt(easy, CURLOPT_HTTPHEADER, ex.headers));
    return rc;
  }

  // Moves every finished transfer to `out`, refilling curl from the queue as connections free up.
  void Collect(std::vector<Completion>* out) {
    for (;;) {
      int left = 0;
      while (CURLMsg* msg = curl_multi_info_read(multi, &left)) {
        if (msg->msg != CURLMSG_DONE) continue;
        CURL* easy = msg->easy_handle;
        const CURLcode result = msg->data.result;  // msg dies with remove_handle
        auto it = active.find(easy);
        if (it == active.end()) continue;
        std::unique_ptr<Exchange> ex = std::move(it->second);
        active.erase(it);
        out->push_back(Finish(easy, result, *ex));
        curl_multi_remove_handle(multi, easy);
        RecycleEasy(easy);
      }
      if (StartQueued() == 0) break;
      int running = 0;
      curl_multi_perform(multi, &running);  // get the new requests onto the wire now
    }
  }

  Completion Finish(CURL* easy, CURLcode result, const Exchange& ex) {
    long status = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    curl_off_t total_us = 0;
    curl_easy_getinfo(easy, CURLINFO_TOTAL_TIME_T, &total_us);
    if (status != 0) {
      ++answered;
      answered_seconds += static_cast<double>(total_us) / 1e6;
      if (https) NoteHttpVersion(easy);
    }
    const bool truncated = ex.truncated || result == CURLE_FILESIZE_EXCEEDED;
    std::string error;
    if (result != CURLE_OK) error = ex.errbuf[0] != '\0' ? ex.errbuf : curl_easy_strerror(result);
    if (result == CURLE_PEER_FAILED_VERIFICATION || result == CURLE_SSL_CACERT_BADFILE) {
      // Nothing was sent: the server's certificate did not verify (unknown CA, another host name,
      // expired). Say what to check, since curl's text alone reads like a network fault.
      error = "TLS certificate refused (check UPPZY_CA_FILE and the host in UPPZY_BASE_URL): " + error;
    }
    const long long now =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    Completion c{ex.tag, ex.kind,
                 ParseExchange(ex.kind, result == CURLE_OK, error, status, ex.response, truncated,
                               ex.retry_after, now, config.max_response_bytes, ex.key)};
    c.outcome.duration = std::chrono::duration_cast<Millis>(std::chrono::microseconds(total_us));
    return c;
  }

  // Multiplex (many transfers per connection) only while the server answers over HTTP/2.
  void NoteHttpVersion(CURL* easy) {
    long version = 0;
    curl_easy_getinfo(easy, CURLINFO_HTTP_VERSION, &version);
    multiplexing = version == CURL_HTTP_VERSION_2_0;
    max_active = static_cast<long>(config.max_connections) * (multiplexing ? kStreamsPerConnection : 1);
  }

  size_t Perform(long max_wait_ms, std::vector<Completion>* out) {
    const size_t before = out->size();
    std::move(ready.begin(), ready.end(), std::back_inserter(*out));
    ready.clear();
    StartQueued();
    int running = 0;
    curl_multi_perform(multi, &running);
    Collect(out);
    if (out->size() == before) {
      const int wait = static_cast<int>(std::clamp(max_wait_ms, 0L, static_cast<long>(INT_MAX)));
      curl_multi_poll(multi, nullptr, 0, wait, nullptr);
      curl_multi_perform(multi, &running);
      Collect(out);
    }
    return out->size() - before;
  }
};

UppzyClient::UppzyClient(const UpstreamConfig& config) : impl_(std::make_unique<Impl>(config)) {}

UppzyClient::~UppzyClient() = default;

void UppzyClient::StartSubmit(uint64_t tag, const std::string& site, int64_t job_id, int attempt,
                              const std::string& session_id, const std::string& message,
                              const std::string& language) {
  auto ex = std::make_unique<Impl::Exchange>();
  ex->tag = tag;
  ex->kind = RequestKind::kSubmit;
  ex->url = impl_->SiteUrl(site) + "/chat/async";
  ex->post = true;
  json body = json::object();
  body["session_id"] = session_id;
  body["message"] = message;
  body["response_language"] = language;
  ex->body = Dump(body);
  impl_->Enqueue(std::move(ex), site,
                 "Idempotency-Key: " + std::to_string(job_id) + "-" + std::to_string(attempt));
}

void UppzyClient::StartStatus(uint64_t tag, const std::string& site, const std::string& request_id) {
  auto ex = std::make_unique<Impl::Exchange>();
  ex->tag = tag;
  ex->kind = RequestKind::kStatus;
  ex->url = impl_->SiteUrl(site) + "/chat/requests/" + EscapeSegment(request_id);
  impl_->Enqueue(std::move(ex), site);
}

void UppzyClient::StartFeedback(uint64_t tag, const std::string& site, const std::string& session_id,
                                const std::string& request_id, const std::string& feedback) {
  auto ex = std::make_unique<Impl::Exchange>();
  ex->tag = tag;
  ex->kind = RequestKind::kFeedback;
  ex->url = impl_->SiteUrl(site) + "/chat/feedback";
  ex->post = true;
  json body = json::object();
  body["session_id"] = session_id;
  body["request_id"] = request_id;
  body["feedback"] = feedback;
  ex->body = Dump(body);
  impl_->Enqueue(std::move(ex), site);
}

void UppzyClient::StartSessionClose(uint64_t tag, const std::string& site, const std::string& session_id) {
  auto ex = std::make_unique<Impl::Exchange>();
  ex->tag = tag;
  ex->kind = RequestKind::kSessionClose;
  ex->url = impl_->SiteUrl(site) + "/chat/session/close";
  ex->post = true;
  json body = json::object();
  body["session_id"] = session_id;
  ex->body = Dump(body);
  impl_->Enqueue(std::move(ex), site);
}

size_t UppzyClient::Perform(long max_wait_ms, std::vector<Completion>* out) {
  return impl_->Perform(max_wait_ms, out);
}

void UppzyClient::Wakeup() { curl_multi_wakeup(impl_->multi); }

size_t UppzyClient::InFlight() const {
  return impl_->active.size() + impl_->queued.size() + impl_->ready.size();
}

UpstreamStats UppzyClient::Stats() const {
  UpstreamStats s;
  s.waiting = impl_->queued.size();
  s.waited_seconds = impl_->waited_seconds;
  s.answered = impl_->answered;
  s.answered_seconds = impl_->answered_seconds;
  s.multiplexing = impl_->multiplexing;
  s.capacity = static_cast<size_t>(impl_->max_active);
  return s;
}

}  // namespace uppzy
