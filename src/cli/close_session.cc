// uppzy-worker close-session --session S: queues a session close with the same call a web app makes
// (uppzy.close_session); prints the close request's id. The worker delivers it to Uppzy.
#include "cli/command.h"
#include "uppzy/delivery_store.h"

namespace uppzy::cli {

Command AddCloseSession(CLI::App& app) {
  auto session = std::make_shared<std::string>();
  Command c;
  c.app = app.add_subcommand(
      "close-session",
      "Queue the close of an Uppzy session (uppzy.close_session); prints the request's id. "
      "Closing a closed session is fine");
  c.app->add_option("--session", *session, "Uppzy session_id (conversation scope)")->required();
  c.run = [session](const Io& io) {
    const std::string url = DatabaseUrlOrComplain(io);
    if (url.empty()) return kExitUsage;
    try {
      DeliveryStore store(url);
      io.out << store.SessionClosesEnqueue(*session) << "\n";
      return kExitOk;
    } catch (const StoreError& e) {
      io.err << "uppzy-worker close-session: refused, nothing stored: " << FirstLine(e.what()) << "\n";
      return kExitFailed;
    }
  };
  return c;
}

}  // namespace uppzy::cli
