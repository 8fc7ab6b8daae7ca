// uppzy-worker migrate: applies the migrations not yet recorded in uppzy.schema_migrations.
#include "cli/command.h"
#include "uppzy/store.h"

namespace uppzy::cli {

Command AddMigrate(CLI::App& app) {
  Command c;
  c.app = app.add_subcommand("migrate", "Apply the migrations not yet applied (safe to run twice)");
  c.run = [](const Io& io) {
    const std::string url = DatabaseUrlOrComplain(io);
    if (url.empty()) return kExitUsage;
    try {
      Store store(url);
      auto applied = store.Migrate();
      if (applied.empty()) io.out << "schema is up to date\n";
      for (const auto& name : applied) io.out << "applied " << name << "\n";
      return kExitOk;
    } catch (const StoreError& e) {
      io.err << "uppzy-worker migrate: " << FirstLine(e.what()) << "\n";
      return kExitFailed;
    }
  };
  return c;
}

}  // namespace uppzy::cli
