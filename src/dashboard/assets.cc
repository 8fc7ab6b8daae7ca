#include "dashboard/assets.h"

#include <stdexcept>
#include <string>

#include "dashboard/embedded_assets.h"

namespace uppzy::dashboard::assets {
namespace {

std::string_view File(std::string_view name) {
  for (const EmbeddedAsset& a : EmbeddedAssets()) {
    if (a.name == name) return a.text;
  }
  // Only a build that left a file out of src/dashboard/assets/ gets here.
  throw std::logic_error("dashboard asset not compiled in: " + std::string(name));
}

// Looked up once; the views point into EmbeddedAssets(), which lives as long as the program.
struct Files {
  Asset js{"text/javascript; charset=utf-8", File("app.js")};
  Asset css{"text/css; charset=utf-8", File("app.css")};
  Asset icon{"image/svg+xml", File("icon.svg")};
  std::string_view layout = File("layout.html");
  std::string_view overview = File("overview.html");
  std::string_view jobs = File("jobs.html");
  std::string_view job = File("job.html");
  std::string_view login = File("login.html");
};

const Files& All() {
  static const Files kFiles;
  return kFiles;
}

}  // namespace

const Asset* Find(std::string_view path) {
  if (path == "/static/app.js") return &All().js;
  if (path == "/static/app.css") return &All().css;
  if (path == "/static/icon.svg") return &All().icon;
  return nullptr;
}

std::string_view Layout() { return All().layout; }

std::string_view Body(Page page) {
  switch (page) {
    case Page::kOverview:
      return All().overview;
    case Page::kJobs:
      return All().jobs;
    case Page::kJob:
      return All().job;
    case Page::kLogin:
      return All().login;
  }
  return All().overview;
}

}  // namespace uppzy::dashboard::assets
