#include "uppzy/delivery_store.h"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <map>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "store/queries.h"
#include "store/queries_delivery.h"
#include "store/sql_values.h"
#include "store/translate.h"

namespace uppzy {
namespace {

using nlohmann::json;
using store::IdArray;
using store::Iso;
using store::Ms;
using store::Translate;

namespace sql = store::sql;

constexpr DeliveryKind kKinds[] = {DeliveryKind::kFeedback, DeliveryKind::kSessionClose};

const char* Table(DeliveryKind k) {
  return k == DeliveryKind::kFeedback ? "chat_feedback" : "session_closes";
}

// The template with {table} and the kind's fragments filled in.
std::string ForKind(std::string text, DeliveryKind k) {
  const bool fb = k == DeliveryKind::kFeedback;
  const std::pair<const char*, const char*> subs[] = {
      {"{table}", Table(k)},
      {"{claimed}", fb ? sql::kFeedbackClaimedColumns : sql::kSessionCloseClaimedColumns},
      {"{resend}", fb ? sql::kFeedbackResend : sql::kSessionCloseResend},
      {"{extra}", fb ? sql::kFeedbackApplyExtra : sql::kSessionCloseApplyExtra},
      {"{request_id}", fb ? sql::kFeedbackRequestId : sql::kSessionCloseRequestId},
  };
  for (const auto& [key, value] : subs) {
    const std::string k_str(key);
    for (size_t pos = text.find(k_str); pos != std::string::npos; pos = text.find(k_str, pos)) {
      text.replace(pos, k_str.size(), value);
      pos += std::string_view(value).size();
    }
  }
  return text;
}

// The prepared statement's name for `what` on kind `k`, e.g. "deliveries_claim_session_close".
std::string Name(const char* what, DeliveryKind k) {
  return std::string("deliveries_") + what + "_" + std::string(ToString(k));
}

json WriteJson(const DeliveryWrite& w) {
  json j;
  j["id"] = w.id;
  j["expected_attempt"] = w.expected_attempt;
  j["new_state"] = ToString(w.new_state);
  j["attempts_delta"] = w.attempts_delta;
  j["run_at_ms"] = w.run_at ? json(Ms(*w.run_at)) : json(nullptr);
  j["sent_feedback"] = w.sent_feedback.empty() ? json(nullptr) : json(w.sent_feedback);
  j["delivered_http_status"] = w.delivered_http_status ? json(w.delivered_http_status) : json(nullptr);
  j["feedback_submitted_at_ms"] =
      w.feedback_submitted_at ? json(Ms(*w.feedback_submitted_at)) : json(nullptr);
  if (w.error) {
    const ErrorEntry& e = *w.error;
    j["error_kind"] = ToString(e.kind);
    j["last_error"] = e.message;
    j["last_http_status"] = e.http_status ? json(e.http_status) : json(nullptr);
    j["error_entry"] = json{{"attempt", e.attempt},
                            {"at", Iso(e.at)},
                            {"kind", ToString(e.kind)},
                            {"http_status", e.http_status ? json(e.http_status) : json(nullptr)},
                            {"message", e.message},
                            {"request_id", e.request_id.empty() ? json(nullptr) : json(e.request_id)}};
  } else {
    j["error_kind"] = nullptr;
    j["last_error"] = nullptr;
    j["last_http_status"] = nullptr;
    j["error_entry"] = nullptr;
  }
  return j;
}

}  // namespace

struct DeliveryStore::Impl {
  explicit Impl(const std::string& url) : conn(url) {
    pqxx::nontransaction(conn).exec(sql::kSessionLockTimeout);
    for (DeliveryKind k : kKinds) {
      conn.prepare(Name("claim", k), ForKind(sql::kDeliveriesClaim, k));
      conn.prepare(Name("apply", k), ForKind(sql::kDeliveriesApplyWrites, k));
      conn.prepare(Name("renew", k), ForKind(sql::kDeliveriesRenewLeases, k));
      conn.prepare(Name("rescue", k), ForKind(sql::kDeliveriesRescueExpired, k));
    }
  }
  pqxx::connection conn;
};

DeliveryStore::DeliveryStore(const std::string& database_url) {
  Translate([&] {
    impl_ = std::make_unique<Impl>(database_url);
    return 0;
  });
}

DeliveryStore::~DeliveryStore() = default;

std::vector<ClaimedDelivery> DeliveryStore::DeliveriesClaim(DeliveryKind kind, const std::string& worker,
                                                            int lease_ms, const ClaimScope& scope,
                                                            int limit) {
  return Translate([&] {
    std::vector<ClaimedDelivery> out;
    if (limit <= 0 || scope.Total() <= 0) return out;
    const auto arrays = store::ToArrays(scope);
    pqxx::work tx(impl_->conn);
    auto r = tx.exec_prepared(Name("claim", kind), worker, static_cast<long long>(lease_ms), arrays.sites,
                              arrays.limits, scope.default_site, limit);
    tx.commit();
    out.reserve(r.size());
    for (const auto& row : r) {
      ClaimedDelivery d;
      d.id = row[0].as<int64_t>();
      d.kind = kind;
      d.session_id = row[1].as<std::string>();
      d.request_id = row[2].as<std::string>();
      d.feedback = row[3].as<std::string>();
      d.attempt = row[4].as<int>();
      d.max_attempts = row[5].as<int>();
      d.site_id = row[6].as<std::string>();
      out.push_back(std::move(d));
    }
    return out;
  });
}

std::vector<ClaimedDelivery> DeliveryStore::DeliveriesClaim(DeliveryKind kind, const std::string& worker,
                                                            int lease_ms, int limit) {
  return DeliveriesClaim(kind, worker, lease_ms, ClaimScope::DefaultOnly("", limit), limit);
}

DeliveryApplyResult DeliveryStore::DeliveriesApplyWrites(const std::string& worker,
                                                         const std::vector<DeliveryWrite>& writes) {
  return Translate([&] {
    DeliveryApplyResult result;
    if (writes.empty()) return result;
    // Per row, its writes in the order they were made; round k applies every row's k-th write. A row
    // leaves the rounds at its first write that is refused (fenced) or deferred (locked elsewhere).
    enum class Fate { kApplied, kRefused, kDeferred };
    std::map<DeliveryRef, std::vector<const DeliveryWrite*>> by_row;
    std::vector<DeliveryRef> order;
    for (const auto& w : writes) {
      auto& queue = by_row[w.ref()];
      if (queue.empty()) order.push_back(w.ref());
      queue.push_back(&w);
    }
    std::map<DeliveryRef, Fate> fate;
    for (const auto& ref : order) fate[ref] = Fate::kApplied;
    bool requeued = false;
    pqxx::work tx(impl_->conn);
    for (size_t round = 0;; ++round) {
      std::map<DeliveryKind, json> batches;
      for (const auto& ref : order) {
        const auto& queue = by_row[ref];
        if (round >= queue.size() || fate[ref] != Fate::kApplied) continue;
        auto& batch = batches[ref.kind];
        if (batch.is_null()) batch = json::array();
        batch.push_back(WriteJson(*queue[round]));
      }
      if (batches.empty()) break;
      for (const auto& [kind, batch] : batches) {
        for (const auto& row : tx.exec_prepared(Name("apply", kind), worker, batch.dump())) {
          const DeliveryRef ref{kind, row[0].as<int64_t>()};
          const bool exists = row[1].as<bool>();
          const bool locked = row[2].as<bool>();
          const bool applied = row[3].as<bool>();
          requeued = requeued || row[4].as<bool>();
          if (!applied) fate[ref] = exists && !locked ? Fate::kDeferred : Fate::kRefused;
        }
      }
    }
    if (requeued) tx.exec(sql::kDeliveriesNotifyRequeued);
    tx.commit();
    // A row counts as applied only if every one of its writes was.
    for (const auto& ref : order) {
      switch (fate[ref]) {
        case Fate::kApplied:
          result.applied.push_back(ref);
          break;
        case Fate::kRefused:
          result.refused.push_back(ref);
          break;
        case Fate::kDeferred:
          result.deferred.push_back(ref);
          break;
      }
    }
    return result;
  });
}

std::vector<DeliveryRef> DeliveryStore::DeliveriesRenewLeases(const std::string& worker,
                                                              const std::vector<DeliveryRef>& held,
                                                              int lease_ms) {
  return Translate([&] {
    std::vector<DeliveryRef> renewed;
    if (held.empty()) return renewed;
    std::map<DeliveryKind, std::vector<int64_t>> ids;
    for (const auto& ref : held) ids[ref.kind].push_back(ref.id);
    pqxx::work tx(impl_->conn);
    for (const auto& [kind, list] : ids) {
      for (const auto& row :
           tx.exec_prepared(Name("renew", kind), worker, IdArray(list), static_cast<long long>(lease_ms))) {
        renewed.push_back({kind, row[0].as<int64_t>()});
      }
    }
    tx.commit();
    return renewed;
  });
}

int DeliveryStore::DeliveriesRescueExpired(int limit) {
  return Translate([&] {
    pqxx::work tx(impl_->conn);
    size_t n = 0;
    for (DeliveryKind k : kKinds) n += tx.exec_prepared(Name("rescue", k), limit).size();
    tx.commit();
    return static_cast<int>(n);
  });
}

bool DeliveryStore::DeliveriesAnyUnfinished() {
  return Translate([&] {
    pqxx::nontransaction tx(impl_->conn);
    return tx.exec(sql::kDeliveriesAnyUnfinished)[0][0].as<bool>();
  });
}

int64_t DeliveryStore::FeedbackRateJob(int64_t job_id, const std::string& rating,
                                       const std::optional<std::string>& comment) {
  return Translate([&] {
    pqxx::work tx(impl_->conn);
    // libpqxx 6 passes a null parameter for a null pointer.
    const char* c = comment ? comment->c_str() : nullptr;
    auto r = tx.exec_params(sql::kFeedbackRateJob, job_id, rating, c);
    tx.commit();
    return r[0][0].as<int64_t>();
  });
}

int64_t DeliveryStore::SessionClosesEnqueue(const std::string& session_id) {
  return Translate([&] {
    pqxx::work tx(impl_->conn);
    auto r = tx.exec_params(sql::kSessionClosesEnqueue, session_id);
    tx.commit();
    return r[0][0].as<int64_t>();
  });
}

}  // namespace uppzy
