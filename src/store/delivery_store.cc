#include "uppzy/delivery_store.h"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <map>
#include <pqxx/pqxx>

#include "store/queries.h"
#include "store/queries_delivery.h"
#include "store/sql_values.h"
#include "store/translate.h"

namespace uppzy {
namespace {

using store::IdArray;
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

// A batch of delivery writes as the 12 typed arrays of kDeliveriesApplyWrites, in its column order.
class DeliveryWriteColumns {
 public:
  void Add(const DeliveryWrite& w) {
    c_[0].Int(w.id);
    c_[1].Int(w.expected_attempt);
    c_[2].Text(ToString(w.new_state));
    c_[3].Int(w.attempts_delta);
    c_[4].Ms(w.run_at);
    w.sent_feedback.empty() ? c_[5].Null() : c_[5].Text(w.sent_feedback);
    w.delivered_http_status ? c_[6].Int(w.delivered_http_status) : c_[6].Null();
    c_[7].Ms(w.feedback_submitted_at);
    store::AddErrorColumns(w.error, c_[8], c_[9], c_[10], c_[11]);
    ++size_;
  }
  size_t size() const { return size_; }
  // The statement's parameters: the worker, then the columns. The builder is empty afterwards.
  pqxx::result Exec(pqxx::work& tx, const std::string& statement, const std::string& worker) {
    size_ = 0;
    return tx.exec_prepared(statement, worker, c_[0].Take(), c_[1].Take(), c_[2].Take(), c_[3].Take(),
                            c_[4].Take(), c_[5].Take(), c_[6].Take(), c_[7].Take(), c_[8].Take(),
                            c_[9].Take(), c_[10].Take(), c_[11].Take());
  }

 private:
  store::ArrayColumn c_[12];
  size_t size_ = 0;
};

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
    pqxx::nontransaction tx(impl_->conn);  // one statement: autocommit, one round trip
    auto r = tx.exec_prepared(Name("claim", kind), worker, static_cast<long long>(lease_ms), arrays.sites,
                              arrays.limits, scope.default_site, limit);
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
      std::map<DeliveryKind, DeliveryWriteColumns> batches;
      for (const auto& ref : order) {
        const auto& queue = by_row[ref];
        if (round >= queue.size() || fate[ref] != Fate::kApplied) continue;
        batches[ref.kind].Add(*queue[round]);
      }
      if (batches.empty()) break;
      for (auto& [kind, batch] : batches) {
        for (const auto& row : batch.Exec(tx, Name("apply", kind), worker)) {
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
