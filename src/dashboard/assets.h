// Everything the dashboard's browser side needs, compiled into the binary (no CDN, no build step):
// the page layout, each page's static skeleton, one stylesheet, one script and the icon. The script
// builds every element that shows database values with createElement/textContent, never innerHTML.
#pragma once

#include <string_view>

namespace uppzy::http::assets {

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
std::string_view Body(Page page);

}  // namespace uppzy::http::assets
