// uppzy-worker enqueue: the same INSERT a web app runs; prints the new id.
#include "cli/command.h"
#include "uppzy/store.h"

namespace uppzy::cli {

Command AddEnqueue(CLI::App& app) {
  auto job = std::make_shared<NewJob>();
  auto max_attempts = std::make_shared<int>(0);
  Command c;
  c.app = app.add_subcommand("enqueue", "Enqueue one job with the same INSERT a web app runs; prints its id");
  c.app->add_option("--session", job->session_id, "Uppzy session_id (conversation scope)")->required();
  c.app->add_option("--message", job->message, "The question to ask")->required();
  c.app->add_option("--language", job->response_language, "response_language, e.g. en or pt-BR");
  c.app->add_option("--key", job->job_key, "job_key: the app's own id, for idempotent enqueue");
  c.app->add_option("--max-attempts", *max_attempts, "Bound on submissions (1 to 100; default 3)");
  c.app->add_option("--priority", job->priority, "Higher runs first (default 0)");
  c.app->add_option("--metadata", job->metadata_json, "The app's own JSON object, returned as it came");
  c.run = [job, max_attempts](const Io& io) {
    const std::string url = DatabaseUrlOrComplain(io);
    if (url.empty()) return kExitUsage;
    NewJob j = *job;
    if (*max_attempts != 0) j.max_attempts = *max_attempts;
    try {
      Store store(url);
      EnqueueResult r = store.JobsEnqueue(j);
      io.out << r.id << "\n";
      if (!r.created) io.err << "a job with key '" << j.job_key << "' already exists; nothing enqueued\n";
      return kExitOk;
    } catch (const StoreError& e) {
      // The constraint name says which rule was broken, e.g. chat_jobs_message_length.
      io.err << "uppzy-worker enqueue: rejected, nothing enqueued: " << FirstLine(e.what()) << "\n";
      return kExitFailed;
    }
  };
  return c;
}

}  // namespace uppzy::cli
