#include <prometheus/text_serializer.h>

#include "uppzy/metrics.h"

namespace uppzy::metrics {

std::string Exposition(const prometheus::Registry& registry) {
  return prometheus::TextSerializer().Serialize(registry.Collect());
}

}  // namespace uppzy::metrics
