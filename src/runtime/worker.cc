#include "uppzy/worker.h"

#include <atomic>
#include <optional>
#include <stdexcept>
#include <thread>

#include "runtime/coordinator.h"
#include "runtime/engine.h"
#include "runtime/maintenance.h"
#include "runtime/poll_plans.h"
#include "uppzy/clock.h"
#include "uppzy/health_server.h"
#include "uppzy/key_ring.h"
#include "uppzy/log.h"
#include "uppzy/metrics.h"
#include "uppzy/store.h"
#include "uppzy/uppzy_client.h"

namespace uppzy {

// /readyz turns 503 after this long without a coordinator pass that reached the database cleanly
// (a pass takes milliseconds and runs at least every UPPZY_FETCH_INTERVAL_MS).
constexpr long long kStalledAfterMs = 15000;

namespace {

// How often the key files are checked for changes (a stat() of each).
constexpr auto kKeyCheckInterval = std::chrono::seconds(1);

// How often the listener checks its connection with a `SELECT 1` (one database transaction): a
// connection that died silently is found within this, and the coordinator falls back to polling.
constexpr auto kListenerPing = std::chrono::seconds(15);

// Config::keys as LoadConfig filled it; a Config built by hand with only `site` keys that one site.
KeySources KeySourcesOf(const Config& c) {
  if (!c.keys.env_key.empty() || !c.keys.key_file.empty() || !c.keys.keys_dir.empty()) return c.keys;
  KeySources s;
  s.default_site = c.site.site_id;
  s.env_key = c.site.api_key;
  return s;
}

UpstreamConfig MakeUpstreamConfig(const Config& c, const KeyRing& keys) {
  UpstreamConfig u;
  u.base_url = c.base_url;
  u.key_lookup = [&keys](const std::string& site) -> std::optional<std::string> {
    std::optional<Key> key = keys.Get(site);
    if (!key) return std::nullopt;
    return std::move(key->key);
  };
  u.connect_timeout_ms = c.connect_timeout_ms;
  u.total_timeout_ms = c.http_timeout_ms;
  u.max_response_bytes = c.max_response_bytes;
  u.max_connections = c.http_max_connections;
  u.ca_file = c.ca_file;
  return u;
}

}  // namespace

struct Worker::Impl {
  Impl(Config c, WorkerOptions o) : config(std::move(c)), options(o) {}

  // Wakes the coordinator on every INSERT (one NOTIFY per statement) and on incident resolution, for
  // the claims the payload names (Mailbox::WakeForPayload).
  // Health-checked by its own timeouts: a lost connection is re-made with backoff.
  void ListenLoop() {
    int delay_ms = 100;
    while (!mailbox.stopping) {
      try {
        Listener listener(config.database_url, "uppzy_chat_jobs_wakeup");
        delay_ms = 100;
        mailbox.listening = true;
        mailbox.WakeDb();  // we may have missed notifications while disconnected
        auto next_ping = std::chrono::steady_clock::now() + kListenerPing;
        std::vector<std::string> payloads;
        while (!mailbox.stopping) {
          payloads.clear();
          if (const int n = listener.Wait(250, &payloads); n > 0) {
            // Payloads past Listener::kMaxPayloads were not kept: then wake for everything.
            unsigned what = static_cast<size_t>(n) > payloads.size() ? runtime::Mailbox::kWakeAll : 0;
            for (const auto& p : payloads) what |= runtime::Mailbox::WakeForPayload(p);
            mailbox.WakeDb(what);
          }
          if (std::chrono::steady_clock::now() >= next_ping) {
            listener.Ping();  // health check: re-made below if the connection is gone
            next_ping = std::chrono::steady_clock::now() + kListenerPing;
          }
        }
        mailbox.listening = false;
      } catch (const StoreError&) {
        // Not listening: the coordinator goes back to its UPPZY_FETCH_INTERVAL_MS fallback at once.
        mailbox.listening = false;
        mailbox.WakeDb();
        std::this_thread::sleep_for(Millis(delay_ms));
        delay_ms = std::min(delay_ms * 2, 5000);
      }
    }
  }

  // Re-reads the key files on ReloadKeys() (SIGHUP) and when they change (checked every second).
  void WatchKeys(KeyRing& keys) {
    auto next_check = std::chrono::steady_clock::now() + kKeyCheckInterval;
    while (!mailbox.stopping) {
      std::this_thread::sleep_for(Millis(100));
      if (reload_keys.exchange(false)) {
        LogKeyReload(keys.Reload(), "SIGHUP");
      } else if (std::chrono::steady_clock::now() >= next_check) {
        next_check = std::chrono::steady_clock::now() + kKeyCheckInterval;
        if (auto reload = keys.CheckForChanges()) LogKeyReload(*reload, "file_change");
      }
    }
  }

  Config config;
  WorkerOptions options;
  std::atomic<bool> reload_keys{false};
  runtime::Mailbox mailbox;
  // Every event the worker counts is recorded here, once; /metrics serves the registry.
  prometheus::Registry registry;
  metrics::WorkerMetrics metrics{registry};
};

Worker::Worker(Config config, WorkerOptions options)
    : impl_(std::make_unique<Impl>(std::move(config), options)) {}

Worker::~Worker() = default;

const metrics::WorkerMetrics& Worker::metrics() const { return impl_->metrics; }

void Worker::ReloadKeys() { impl_->reload_keys = true; }

void Worker::Stop() {
  impl_->mailbox.stopping = true;
  impl_->mailbox.WakeEngine();
  impl_->mailbox.WakeDb();
}

int Worker::Run() {
  Impl& s = *impl_;
  // LoadConfig read the keys already; read again, they can only fail if the files changed meanwhile.
  KeyRingResult loaded = KeyRing::Load(KeySourcesOf(s.config));
  if (!loaded.ring) {
    std::string all;
    for (const auto& p : loaded.problems) all += (all.empty() ? "" : "\n  - ") + p;
    throw std::invalid_argument(all);
  }
  KeyRing& keys = *loaded.ring;
  UppzyClient client(MakeUpstreamConfig(s.config, keys));  // throws std::invalid_argument for a refused URL
  runtime::PollPlans plans;  // adaptive polling: maintenance publishes, the engine reads
  runtime::Engine engine(s.config, s.mailbox, s.metrics, client, RealClock(), &keys, &plans);
  s.mailbox.SetEngineWaker([&engine] { engine.Wakeup(); });
  runtime::Coordinator coordinator(s.config, s.options, s.mailbox, s.metrics,
                                   runtime::PostgresWorkerStores(s.config.database_url), RealClock(), &keys);
  runtime::Maintenance maintenance(s.config, s.metrics,
                                   &plans);  // retention, database gauges, /readyz; own thread
  maintenance.Start();
  http::HealthServer health;
  if (s.config.http_addr != "off") {
    health.Start(s.config.http_addr,
                 {&s.registry, [&maintenance, &s] {
                    // A coordinator that reaches the database but makes no progress (every pass fails)
                    // claims nothing and renews no lease: not ready, even though the database answers.
                    const long long stalled_ms = runtime::SteadyMs() - s.mailbox.db_progress_at_ms.load();
                    if (stalled_ms > kStalledAfterMs) {
                      return std::make_pair(false, std::string(R"({"status":"not_ready","reason":)") +
                                                       R"("the worker has made no database progress for )" +
                                                       std::to_string(stalled_ms / 1000) + R"( s"})");
                    }
                    return maintenance.Ready();
                  }});
  }
  LogEvent(spdlog::level::info, "worker_started",
           {{"worker_id", s.config.worker_id},
            {"site_id", s.config.site.site_id},
            {"api_key_fingerprint", s.config.site.key_fingerprint},
            {"key_sites", std::to_string(keys.Sites().size())},
            {"max_in_flight", std::to_string(s.config.max_in_flight)},
            {"http_port", std::to_string(health.port())}});

  std::atomic<bool> all_done{false};
  std::thread db([&] { coordinator.Run(all_done); });
  std::thread listen([&] { s.ListenLoop(); });
  std::thread watch_keys([&] { s.WatchKeys(keys); });
  engine.Run();
  db.join();
  listen.join();
  watch_keys.join();
  s.mailbox.SetEngineWaker(nullptr);
  health.Stop();
  LogEvent(spdlog::level::info, "worker_stopped",
           {{"completed", std::to_string(s.metrics.completed())},
            {"failed", std::to_string(s.metrics.failed())},
            {"retries", std::to_string(s.metrics.retries())}});
  return 0;
}

}  // namespace uppzy
