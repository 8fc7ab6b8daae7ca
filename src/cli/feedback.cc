// uppzy-worker feedback --job ID --rating good|bad [--comment C]: rates a completed job with the same
// call a web app makes (uppzy.rate_job); prints the rating's id. The worker delivers it to Uppzy.
#include <optional>

#include "cli/command.h"
#include "uppzy/delivery_store.h"

namespace uppzy::cli {
namespace {

struct Options {
  long long job_id = 0;
  std::string rating;
  std::optional<std::string> comment;
};

}  // namespace

Command AddFeedback(CLI::App& app) {
  auto o = std::make_shared<Options>();
  Command c;
  c.app =
      app.add_subcommand("feedback",
                         "Rate a completed job (uppzy.rate_job); prints the rating's id. A changed rating is "
                         "sent again; the same rating twice changes nothing");
  c.app->add_option("--job", o->job_id, "The id of the rated job in uppzy.chat_jobs (must be completed)")
      ->required();
  c.app->add_option("--rating", o->rating, "good or bad")->required()->check(CLI::IsMember({"good", "bad"}));
  c.app->add_option("--comment", o->comment,
                    "The app's own note, stored with the rating (never sent to Uppzy)");
  c.run = [o](const Io& io) {
    const std::string url = DatabaseUrlOrComplain(io);
    if (url.empty()) return kExitUsage;
    try {
      DeliveryStore store(url);
      io.out << store.FeedbackRateJob(o->job_id, o->rating, o->comment) << "\n";
      return kExitOk;
    } catch (const StoreError& e) {
      // e.g. "cannot rate job 42: its state is polling, not completed (...)".
      io.err << "uppzy-worker feedback --job " << o->job_id
             << ": refused, nothing stored: " << FirstLine(e.what()) << "\n";
      return kExitFailed;
    }
  };
  return c;
}

}  // namespace uppzy::cli
