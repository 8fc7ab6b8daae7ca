// nginx as a TLS terminator in front of a MockProcess, for tests of the https path: a real nginx
// process (scripts/tls-front) with a throwaway CA and certificates made by openssl in a temporary
// directory. Not thread-safe.
#pragma once

#include <memory>
#include <string>

#include "support/support.h"

namespace uppzy::test {

class TlsFront {
 public:
  enum class Cert {
    kGood,       // localhost and 127.0.0.1, signed by the test CA (ca_file())
    kWrongHost,  // other.example only, signed by the test CA
    kUnknownCa,  // localhost, signed by a CA that ca_file() does not hold
  };

  // "" when nginx and openssl are installed; else why not, for a test's SKIP message.
  static std::string Unavailable();

  // Starts nginx on a free port of 127.0.0.1, proxying to `mock`; HTTP/1.1 only, or HTTP/2 too.
  // Returns once it accepts connections. Throws std::runtime_error (with nginx's log) if it cannot.
  TlsFront(const MockProcess& mock, bool http2, Cert cert = Cert::kGood);
  // Stops nginx and removes the directory (kept with UPPZY_TEST_KEEP_LOGS).
  ~TlsFront();
  TlsFront(const TlsFront&) = delete;
  TlsFront& operator=(const TlsFront&) = delete;

  std::string base_url() const;  // https://localhost:PORT/api/v1
  std::string ca_file() const;   // the test CA, for UPPZY_CA_FILE
  // Requests nginx served so far over each protocol (from its access log, flushed every 200 ms).
  long Requests(const std::string& protocol) const;  // "HTTP/1.1" or "HTTP/2.0"
  std::string ErrorLog() const;

 private:
  std::string dir_;
  int port_ = 0;
  std::unique_ptr<Process> nginx_;
};

}  // namespace uppzy::test
