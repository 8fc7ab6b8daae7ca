// uppzy-mock: the mock Uppzy server as a process, for the demo and load benchmarks. The behaviour and
// its scripting are documented in src/mock/mock_server.h and src/mock/mock_script.h.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "mock/mock_server.h"

namespace {

// Writes `port` to `path` atomically: a reader sees either no file or the whole number.
void WritePortFile(const std::string& path, int port) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << port << '\n';
    out.flush();
    if (!out) throw std::runtime_error("cannot write " + tmp);
  }
  std::filesystem::rename(tmp, path);
}

// A CLI11 check that runs `parse` on each value and reports its error under the option's name.
template <typename Parse>
CLI::Validator Checked(const char* what, Parse parse) {
  return CLI::Validator(
      [parse](std::string& value) {
        std::string error;
        return parse(value, &error) ? std::string() : error;
      },
      what);
}

// Fills options.sites and options.rate_limits from the flags' values (each already checked by
// Checked). Throws CLI::ValidationError naming the option for a site given twice, or a rate limit of a
// site that --site does not list.
void ApplySiteFlags(const std::vector<std::string>& sites, const std::vector<std::string>& limits,
                    uppzy::mock::MockOptions* options) {
  std::string error;  // unused: every value has passed Checked
  for (const std::string& text : sites) {
    uppzy::mock::SiteKey site = *uppzy::mock::ParseSiteKey(text, &error);
    for (const auto& other : options->sites) {
      if (other.site == site.site)
        throw CLI::ValidationError("--site", "site " + site.site + " is given twice");
    }
    options->sites.push_back(std::move(site));
  }
  for (const std::string& text : limits) {
    auto [site, limit] = *uppzy::mock::ParseRateLimit(text, &error);
    if (options->rate_limits.count(site) != 0) {
      throw CLI::ValidationError("--rate-limit", "site " + site + " is given twice");
    }
    bool listed = options->sites.empty();
    for (const auto& s : options->sites) listed = listed || s.site == site;
    if (!listed) throw CLI::ValidationError("--rate-limit", "site " + site + " is not given by any --site");
    options->rate_limits.emplace(site, limit);
  }
}

}  // namespace

int main(int argc, char** argv) {
  uppzy::mock::MockOptions options;
  std::string port_file;
  std::vector<std::string> sites, rate_limits;
  std::string ready_dist;

  CLI::App app{"uppzy-mock: a scriptable mock of the Uppzy chat API (base URL http://HOST:PORT/api/v1)"};
  app.add_option("--host", options.host, "Address to listen on")->capture_default_str();
  app.add_option("--port", options.port, "TCP port; 0 picks a free one")->capture_default_str();
  app.add_option("--port-file", port_file, "Write the bound port here once listening (atomically)");
  app.add_option("--api-key", options.api_key, "The X-API-Key every /api/v1 request must carry")
      ->capture_default_str();
  app.add_option("--site", sites,
                 "SITE=KEY (repeatable): serve SITE with its own key; unlisted sites are 404 and "
                 "--api-key is unused")
      ->check(Checked("SITE=KEY", uppzy::mock::ParseSiteKey));
  app.add_option("--rate-limit", rate_limits,
                 "SITE=N[/s][,BURST] (repeatable): token bucket of N requests/s, BURST at once (default N "
                 "rounded up); above it 429 with Retry-After")
      ->check(Checked("SITE=N[/s][,BURST]", uppzy::mock::ParseRateLimit));
  app.add_option("--ready-after-ms", options.ready_after_ms, "A request completes this long after submission")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--ready-dist", ready_dist,
                 "Draw each request's answer time: lognormal:median_ms=M,sigma=S or "
                 "uniform:min_ms=A,max_ms=B (seeded by --seed); replaces --ready-after-ms")
      ->check(Checked("DIST", uppzy::mock::ParseReadyDist));
  app.add_option("--fault-rate-429", options.fault_rate_429, "Probability of a 429 on an unscripted call")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--fault-rate-5xx", options.fault_rate_5xx, "Probability of a 503 on an unscripted call")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--latency-ms", options.latency_ms, "Delay each /api/v1 answer by a random 0..N ms")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--latency-fixed", options.latency_fixed,
               "Delay each /api/v1 answer by exactly --latency-ms (a network round trip), not 0..N");
  app.add_option("--hang-max-ms", options.hang_max_ms, "Close a `hang` connection after this long")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--threads", options.threads, "Server threads (epoll loops)")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_option("--connection-limit", options.connection_limit, "Maximum simultaneous connections")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--seed", options.seed, "Seed of faults, latencies, ids and --ready-dist draws; 0 = random")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
    ApplySiteFlags(sites, rate_limits, &options);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (!ready_dist.empty()) {
    std::string error;
    options.ready_dist = uppzy::mock::ParseReadyDist(ready_dist, &error);  // checked by Checked
  }

  // Block the stop signals before any thread starts, so that every thread inherits the mask and
  // sigwait() below is the only receiver.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  uppzy::mock::MockServer server(options);
  try {
    server.Start();
    if (!port_file.empty()) WritePortFile(port_file, server.port());
  } catch (const std::exception& e) {
    std::cerr << e.what() << std::endl;
    return 1;
  }
  std::cout << "uppzy-mock listening on " << options.host << ":" << server.port() << std::endl;

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  server.Stop();
  return 0;
}
