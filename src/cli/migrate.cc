// uppzy-worker migrate [--with-roles]: applies the migrations not yet recorded in
// uppzy.schema_migrations; with --with-roles, then creates the roles of migrations/roles.sql.
#include "cli/command.h"
#include "uppzy/ops_store.h"
#include "uppzy/store.h"

namespace uppzy::cli {

Command AddMigrate(CLI::App& app) {
  auto with_roles = std::make_shared<bool>(false);
  Command c;
  c.app = app.add_subcommand("migrate", "Apply the migrations not yet applied (safe to run twice)");
  c.app->add_flag("--with-roles", *with_roles,
                  "Also create the NOLOGIN roles uppzy_app, uppzy_operator and uppzy_worker and grant "
                  "their privileges in this database (migrations/roles.sql; safe to run twice)");
  c.run = [with_roles](const Io& io) {
    const std::string url = DatabaseUrlOrComplain(io);
    if (url.empty()) return kExitUsage;
    try {
      Store store(url);
      auto applied = store.Migrate();
      if (applied.empty()) io.out << "schema is up to date\n";
      for (const auto& name : applied) io.out << "applied " << name << "\n";
      if (*with_roles) {
        OpsStore(url).RolesApply();
        io.out << "roles uppzy_app, uppzy_operator, uppzy_worker: created if missing, privileges granted\n";
      }
      return kExitOk;
    } catch (const StoreError& e) {
      io.err << "uppzy-worker migrate: " << FirstLine(e.what()) << "\n";
      return kExitFailed;
    }
  };
  return c;
}

}  // namespace uppzy::cli
