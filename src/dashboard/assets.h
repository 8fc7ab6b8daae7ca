// Everything the dashboard's browser side needs, compiled into the binary (no CDN, no build step):
// the page layout, each page's static skeleton, one stylesheet, one script and the icon. They are
// plain files under src/dashboard/assets/ (layout.html, overview.html, jobs.html, job.html,
// login.html, app.css, app.js, icon.svg), embedded at build time (embedded_assets.h). The script
// builds every element that shows database values with createElement/textContent, never innerHTML;
// no page has inline script or style (the Content-Security-Policy forbids both).
// Thread-safe. The first call of any function throws std::logic_error if a build left one of those
// files out (a bug, not an input); nothing else throws but std::bad_alloc.
#pragma once

#include <string_view>

namespace uppzy::dashboard::assets {

struct Asset {
  std::string_view content_type;
  std::string_view body;
};

// "/static/app.js", "/static/app.css", "/static/icon.svg"; nullptr for anything else.
const Asset* Find(std::string_view path);

// The HTML layout. Placeholders (replaced by the server with fixed text, never database values):
// {{title}} {{page}} {{mode}} {{show_text}} {{csrf}} {{banner}} {{session}} {{body}}.
std::string_view Layout();

enum class Page { kOverview, kJobs, kJob, kLogin };
// A page's body; the login page's has the placeholder {{extra}} (an error line after a wrong token).
std::string_view Body(Page page);

}  // namespace uppzy::dashboard::assets
