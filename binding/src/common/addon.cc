// N-API glue: the JS-facing `Engine` class. Kernel-touching methods return Promises and run on the
// libuv thread pool, one at a time per engine (a mutex serializes them); status() is synchronous.
#include <napi.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>

#include "backend.h"

namespace netclamp {
namespace {

// What a pending call and the env cleanup hook share; outlives the JS object while work is queued.
struct BackendHost {
  std::mutex mu;
  std::unique_ptr<Backend> backend;
};

// Carries backend events (from any thread) to the JS callback given to onEvent(). Unref'd, so an idle
// subscription never keeps the process alive; released by the env cleanup hook.
struct EventBridge {
  std::mutex mu;
  Napi::ThreadSafeFunction tsfn;
  bool active = false;
};

Napi::Value MakeError(Napi::Env env, const BackendError& e) {
  Napi::Error error = Napi::Error::New(env, e.what());
  error.Set("code", Napi::String::New(env, e.code()));
  if (e.err() != 0) error.Set("errno", Napi::Number::New(env, e.err()));
  if (!e.syscall().empty()) error.Set("syscall", Napi::String::New(env, e.syscall()));
  return error.Value();
}

template <typename Result>
class BackendCall : public Napi::AsyncWorker {
 public:
  using Work = std::function<Result(Backend&)>;
  using Convert = std::function<Napi::Value(Napi::Env, Result&)>;

  BackendCall(Napi::Env env, std::shared_ptr<BackendHost> host, Work work, Convert convert)
      : Napi::AsyncWorker(env, "netclamp:engine"),
        deferred_(Napi::Promise::Deferred::New(env)),
        host_(std::move(host)),
        work_(std::move(work)),
        convert_(std::move(convert)) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      std::lock_guard<std::mutex> lock(host_->mu);
      result_ = work_(*host_->backend);
    } catch (const BackendError& e) {
      error_ = std::make_unique<BackendError>(e);
    } catch (const std::exception& e) {
      error_ = std::make_unique<BackendError>("EINTERNAL", e.what());
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (error_) {
      deferred_.Reject(MakeError(env, *error_));
      return;
    }
    try {
      deferred_.Resolve(convert_(env, result_));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<BackendHost> host_;
  Work work_;
  Convert convert_;
  Result result_{};
  std::unique_ptr<BackendError> error_;
};

struct Nothing {};

Napi::Value RejectedPromise(Napi::Env env, const BackendError& e) {
  auto deferred = Napi::Promise::Deferred::New(env);
  deferred.Reject(MakeError(env, e));
  return deferred.Promise();
}

// --- parsing the rule object handed over by lib/engine/native.ts -----------------------------------

std::string RequireString(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsString()) throw BackendError("EINVAL", std::string("rule.") + key + " must be a string", 22);
  return v.As<Napi::String>().Utf8Value();
}

double RequireNumber(const Napi::Object& o, const char* key, double min, double max) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw BackendError("EINVAL", std::string("rule.") + key + " must be a number", 22);
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || d != std::floor(d) || d < min || d > max)
    throw BackendError("EINVAL", std::string("rule.") + key + " is out of range", 22);
  return d;
}

uint64_t OptionalRate(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (v.IsNull() || v.IsUndefined()) return 0;
  return static_cast<uint64_t>(RequireNumber(o, key, 1, 9007199254740991.0));
}

template <typename E>
E OneOf(const Napi::Object& o, const char* key, std::initializer_list<std::pair<const char*, E>> options) {
  std::string s = RequireString(o, key);
  for (const auto& [name, value] : options)
    if (s == name) return value;
  throw BackendError("EINVAL", std::string("rule.") + key + " has an unknown value '" + s + "'", 22);
}

RuleSpec ParseRule(const Napi::Value& value) {
  if (!value.IsObject()) throw BackendError("EINVAL", "rule must be an object", 22);
  Napi::Object o = value.As<Napi::Object>();
  RuleSpec r;
  r.id = static_cast<uint32_t>(RequireNumber(o, "id", 1, 2147483647.0));
  r.action = OneOf<Action>(o, "action", {{"ALLOW", Action::Allow}, {"BLOCK", Action::Block}, {"LIMIT", Action::Limit}});
  r.direction = OneOf<Direction>(
      o, "direction", {{"INBOUND", Direction::Inbound}, {"OUTBOUND", Direction::Outbound}, {"BOTH", Direction::Both}});
  r.protocol = OneOf<Protocol>(
      o, "protocol", {{"ANY", Protocol::Any}, {"TCP", Protocol::Tcp}, {"UDP", Protocol::Udp}, {"ICMP", Protocol::Icmp}});
  r.remote_address = RequireString(o, "remoteAddress");
  r.remote_port = static_cast<uint16_t>(RequireNumber(o, "remotePort", 0, 65535));
  r.rate_down = OptionalRate(o, "rateDownBytesPerSec");
  r.rate_up = OptionalRate(o, "rateUpBytesPerSec");
  r.scope = OneOf<LimitScope>(o, "limitScope",
                              {{"PER_APP", LimitScope::PerApp},
                               {"PER_PROCESS", LimitScope::PerProcess},
                               {"PER_CONNECTION", LimitScope::PerConnection}});
  r.match_mode = OneOf<MatchMode>(
      o, "matchMode",
      {{"EXACT_PATH", MatchMode::ExactPath}, {"FILENAME", MatchMode::Filename}, {"DIRECTORY", MatchMode::Directory}});
  r.app_path = RequireString(o, "appPath");
  r.priority = static_cast<int32_t>(RequireNumber(o, "priority", -2147483648.0, 2147483647.0));
  Napi::Value reset = o.Get("resetCounters");
  r.reset_counters = reset.IsBoolean() && reset.As<Napi::Boolean>().Value();
  std::string fp = RequireString(o, "fingerprint");
  if (fp.size() != 16 || fp.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
    throw BackendError("EINVAL", "rule.fingerprint must be 16 hex digits", 22);
  r.fingerprint = std::stoull(fp, nullptr, 16);
  return r;
}

// watchPatterns([{id, matchMode, path}]): FILENAME/DIRECTORY patterns only.
std::vector<PatternWatch> ParseWatches(const Napi::Value& value) {
  if (!value.IsArray()) throw BackendError("EINVAL", "watchPatterns(watches): watches must be an array", 22);
  Napi::Array list = value.As<Napi::Array>();
  std::vector<PatternWatch> out;
  for (uint32_t i = 0; i < list.Length(); i++) {
    Napi::Value item = list.Get(i);
    if (!item.IsObject()) throw BackendError("EINVAL", "watch must be an object", 22);
    Napi::Object o = item.As<Napi::Object>();
    PatternWatch w;
    w.id = static_cast<uint32_t>(RequireNumber(o, "id", 1, 4294967295.0));
    w.mode = OneOf<MatchMode>(o, "matchMode", {{"FILENAME", MatchMode::Filename}, {"DIRECTORY", MatchMode::Directory}});
    w.path = RequireString(o, "path");
    out.push_back(std::move(w));
  }
  return out;
}

Napi::Object CountersToJs(Napi::Env env, const CounterSet& c) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("bytesUp", Napi::Number::New(env, static_cast<double>(c.bytes_up)));
  o.Set("bytesDown", Napi::Number::New(env, static_cast<double>(c.bytes_down)));
  o.Set("blocked", Napi::Number::New(env, static_cast<double>(c.blocked)));
  return o;
}

std::string Hex16(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// --- the JS class ------------------------------------------------------------------------------------

class Engine : public Napi::ObjectWrap<Engine> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Engine",
                       {
                           InstanceMethod<&Engine::Open>("open"),
                           InstanceMethod<&Engine::Close>("close"),
                           InstanceMethod<&Engine::GetStatus>("status"),
                           InstanceMethod<&Engine::ApplyRule>("applyRule"),
                           InstanceMethod<&Engine::RemoveRule>("removeRule"),
                           InstanceMethod<&Engine::InstalledRules>("installedRules"),
                           InstanceMethod<&Engine::ReadCounters>("readCounters"),
                           InstanceMethod<&Engine::ReadActivity>("readActivity"),
                           InstanceMethod<&Engine::CompetingShapers>("competingShapers"),
                           InstanceMethod<&Engine::Connections>("connections"),
                           InstanceMethod<&Engine::HwidInputs>("hwidInputs"),
                           InstanceMethod<&Engine::WatchPatterns>("watchPatterns"),
                           InstanceMethod<&Engine::OnEvent>("onEvent"),
                       });
  }

  explicit Engine(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Engine>(info) {
    host_ = std::make_shared<BackendHost>();
    host_->backend = CreateBackend();
    env_ = info.Env();
    // A process exit (or worker teardown) must detach everything even if close() was never awaited.
    napi_add_env_cleanup_hook(env_, &Engine::OnEnvCleanup, host_.get());
  }

  ~Engine() override {
    napi_remove_env_cleanup_hook(env_, &Engine::OnEnvCleanup, host_.get());
    ReleaseEvents();
    // Dropping the last reference to the host destroys the backend, which detaches (see backend dtor).
  }

 private:
  void ReleaseEvents() {
    if (!events_) return;
    host_->backend->SetEventSink(nullptr);
    std::lock_guard<std::mutex> lock(events_->mu);
    if (events_->active) {
      events_->active = false;
      events_->tsfn.Release();
    }
  }

  static void OnEnvCleanup(void* arg) {
    auto* host = static_cast<BackendHost*>(arg);
    host->backend->SetEventSink(nullptr);
    std::lock_guard<std::mutex> lock(host->mu);
    try {
      host->backend->Close();
    } catch (...) {
    }
  }

  template <typename Result>
  Napi::Value Queue(Napi::Env env, typename BackendCall<Result>::Work work,
                    typename BackendCall<Result>::Convert convert) {
    auto* call = new BackendCall<Result>(env, host_, std::move(work), std::move(convert));
    Napi::Promise promise = call->Promise();
    call->Queue();
    return promise;
  }

  static Napi::Value Undefined(Napi::Env env, Nothing&) { return env.Undefined(); }

  Napi::Value Open(const Napi::CallbackInfo& info) {
    uint32_t exempt = 0;
    if (info.Length() > 0 && info[0].IsNumber()) exempt = info[0].As<Napi::Number>().Uint32Value();
    return Queue<Nothing>(
        info.Env(),
        [exempt](Backend& b) {
          b.Open(exempt);
          return Nothing{};
        },
        Undefined);
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    return Queue<Nothing>(
        info.Env(),
        [](Backend& b) {
          b.Close();
          return Nothing{};
        },
        Undefined);
  }

  Napi::Value GetStatus(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Status s = host_->backend->GetStatus();
    Napi::Object o = Napi::Object::New(env);
    o.Set("filtering", Napi::Boolean::New(env, s.filtering));
    o.Set("shaping", Napi::Boolean::New(env, s.shaping));
    o.Set("state", Napi::String::New(env, s.state));
    o.Set("detail", s.detail.empty() ? env.Null() : Napi::String::New(env, s.detail));
    o.Set("restarts", Napi::Number::New(env, static_cast<double>(s.restarts)));
    return o;
  }

  Napi::Value CompetingShapers(const Napi::CallbackInfo& info) {
    return Queue<std::vector<CompetingShaper>>(
        info.Env(), [](Backend& b) { return b.CompetingShapers(); },
        [](Napi::Env env, std::vector<CompetingShaper>& list) -> Napi::Value {
          Napi::Array out = Napi::Array::New(env, list.size());
          for (size_t i = 0; i < list.size(); i++) {
            Napi::Object o = Napi::Object::New(env);
            o.Set("name", Napi::String::New(env, list[i].name));
            o.Set("detail", Napi::String::New(env, list[i].detail));
            out.Set(static_cast<uint32_t>(i), o);
          }
          return out;
        });
  }

  Napi::Value Connections(const Napi::CallbackInfo& info) {
    return Queue<std::vector<ConnectionInfo>>(
        info.Env(), [](Backend& b) { return b.Connections(); },
        [](Napi::Env env, std::vector<ConnectionInfo>& list) -> Napi::Value {
          Napi::Array out = Napi::Array::New(env, list.size());
          for (size_t i = 0; i < list.size(); i++) {
            const ConnectionInfo& c = list[i];
            Napi::Object o = Napi::Object::New(env);
            o.Set("protocol", Napi::String::New(env, c.protocol));
            o.Set("localAddress", Napi::String::New(env, c.local_address));
            o.Set("localPort", Napi::Number::New(env, c.local_port));
            o.Set("remoteAddress", Napi::String::New(env, c.remote_address));
            o.Set("remotePort", Napi::Number::New(env, c.remote_port));
            o.Set("state", Napi::String::New(env, c.state));
            o.Set("pid", Napi::Number::New(env, c.pid));
            o.Set("appPath", Napi::String::New(env, c.app_path));
            out.Set(static_cast<uint32_t>(i), o);
          }
          return out;
        });
  }

  Napi::Value HwidInputs(const Napi::CallbackInfo& info) {
    return Queue<netclamp::HwidInputs>(
        info.Env(), [](Backend& b) { return b.ReadHwidInputs(); },
        [](Napi::Env env, netclamp::HwidInputs& h) -> Napi::Value {
          Napi::Object o = Napi::Object::New(env);
          o.Set("machineGuid", Napi::String::New(env, h.machine_guid));
          o.Set("smbiosUuid", Napi::String::New(env, h.smbios_uuid));
          return o;
        });
  }

  Napi::Value WatchPatterns(const Napi::CallbackInfo& info) {
    std::vector<PatternWatch> watches;
    try {
      watches = ParseWatches(info.Length() > 0 ? info[0] : info.Env().Undefined());
    } catch (const BackendError& e) {
      return RejectedPromise(info.Env(), e);
    }
    return Queue<std::vector<WatchedIdentities>>(
        info.Env(), [watches](Backend& b) { return b.WatchPatterns(watches); },
        [](Napi::Env env, std::vector<WatchedIdentities>& found) -> Napi::Value {
          Napi::Array out = Napi::Array::New(env, found.size());
          for (size_t i = 0; i < found.size(); i++) {
            Napi::Object o = Napi::Object::New(env);
            o.Set("id", Napi::Number::New(env, found[i].id));
            Napi::Array ids = Napi::Array::New(env, found[i].identities.size());
            for (size_t j = 0; j < found[i].identities.size(); j++) {
              Napi::Object k = Napi::Object::New(env);
              k.Set("dev", Napi::Number::New(env, static_cast<double>(found[i].identities[j].first)));
              k.Set("ino", Napi::Number::New(env, static_cast<double>(found[i].identities[j].second)));
              ids.Set(static_cast<uint32_t>(j), k);
            }
            o.Set("identities", ids);
            out.Set(static_cast<uint32_t>(i), o);
          }
          return out;
        });
  }

  // onEvent(callback): backend events (Windows: driver events, engine_down / engine_recovered) delivered
  // on the JS thread. A second call replaces the callback. Backends without events never call it.
  Napi::Value OnEvent(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsFunction()) {
      Napi::TypeError::New(env, "onEvent(callback): callback must be a function").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    ReleaseEvents();
    events_ = std::make_shared<EventBridge>();
    events_->tsfn = Napi::ThreadSafeFunction::New(env, info[0].As<Napi::Function>(), "netclamp:events", 256, 1);
    events_->tsfn.Unref(env);
    events_->active = true;
    std::shared_ptr<EventBridge> bridge = events_;
    host_->backend->SetEventSink([bridge](const EngineEvent& event) {
      std::lock_guard<std::mutex> lock(bridge->mu);
      if (!bridge->active) return;
      auto* copy = new EngineEvent(event);
      napi_status status = bridge->tsfn.NonBlockingCall(copy, [](Napi::Env env, Napi::Function callback, EngineEvent* e) {
        std::unique_ptr<EngineEvent> owned(e);
        if (env == nullptr || callback.IsEmpty()) return;
        Napi::Object o = Napi::Object::New(env);
        o.Set("type", Napi::String::New(env, e->type));
        o.Set("ruleId", Napi::Number::New(env, e->rule_id));
        o.Set("flowId", Napi::String::New(env, std::to_string(e->flow_id)));  // 64-bit: exact as text
        o.Set("appKey", Napi::String::New(env, Hex16(e->app_key)));
        o.Set("pid", Napi::Number::New(env, e->pid));
        o.Set("value", Napi::Number::New(env, static_cast<double>(e->value)));
        o.Set("timestamp100ns", Napi::String::New(env, std::to_string(e->timestamp_100ns)));
        o.Set("lost", Napi::Number::New(env, e->lost));
        o.Set("detail", e->detail.empty() ? env.Null() : Napi::String::New(env, e->detail));
        callback.Call({o});
      });
      if (status != napi_ok) delete copy;  // queue full or closing: dropped, as the driver ring would
    });
    return env.Undefined();
  }

  Napi::Value ApplyRule(const Napi::CallbackInfo& info) {
    RuleSpec rule;
    try {
      rule = ParseRule(info.Length() > 0 ? info[0] : info.Env().Undefined());
    } catch (const BackendError& e) {
      return RejectedPromise(info.Env(), e);
    }
    return Queue<Nothing>(
        info.Env(),
        [rule](Backend& b) {
          b.ApplyRule(rule);
          return Nothing{};
        },
        Undefined);
  }

  Napi::Value RemoveRule(const Napi::CallbackInfo& info) {
    if (info.Length() < 1 || !info[0].IsNumber())
      return RejectedPromise(info.Env(), BackendError("EINVAL", "removeRule(id): id must be a number", 22));
    double id = info[0].As<Napi::Number>().DoubleValue();
    if (!(id >= 1 && id <= 2147483647.0 && id == std::floor(id)))
      return RejectedPromise(info.Env(), BackendError("EINVAL", "removeRule(id): id is out of range", 22));
    uint32_t rule_id = static_cast<uint32_t>(id);
    return Queue<Nothing>(
        info.Env(),
        [rule_id](Backend& b) {
          b.RemoveRule(rule_id);
          return Nothing{};
        },
        Undefined);
  }

  Napi::Value InstalledRules(const Napi::CallbackInfo& info) {
    return Queue<std::vector<InstalledRule>>(
        info.Env(), [](Backend& b) { return b.InstalledRules(); },
        [](Napi::Env env, std::vector<InstalledRule>& rules) -> Napi::Value {
          Napi::Array out = Napi::Array::New(env, rules.size());
          for (size_t i = 0; i < rules.size(); i++) {
            Napi::Object o = Napi::Object::New(env);
            o.Set("id", Napi::Number::New(env, rules[i].id));
            o.Set("fingerprint", Napi::String::New(env, Hex16(rules[i].fingerprint)));
            out.Set(static_cast<uint32_t>(i), o);
          }
          return out;
        });
  }

  Napi::Value ReadCounters(const Napi::CallbackInfo& info) {
    return Queue<Counters>(
        info.Env(), [](Backend& b) { return b.ReadCounters(); },
        [](Napi::Env env, Counters& c) -> Napi::Value {
          Napi::Object o = CountersToJs(env, c.totals);
          Napi::Array rules = Napi::Array::New(env, c.rules.size());
          for (size_t i = 0; i < c.rules.size(); i++) {
            Napi::Object r = CountersToJs(env, c.rules[i].counters);
            r.Set("id", Napi::Number::New(env, c.rules[i].id));
            rules.Set(static_cast<uint32_t>(i), r);
          }
          o.Set("rules", rules);
          return o;
        });
  }

  Napi::Value ReadActivity(const Napi::CallbackInfo& info) {
    return Queue<ActivityCounters>(
        info.Env(), [](Backend& b) { return b.ReadActivity(); },
        [](Napi::Env env, ActivityCounters& a) -> Napi::Value {
          Napi::Object o = Napi::Object::New(env);
          Napi::Array apps = Napi::Array::New(env, a.apps.size());
          for (size_t i = 0; i < a.apps.size(); i++) {
            Napi::Object x = CountersToJs(env, a.apps[i].counters);
            x.Set("dev", Napi::Number::New(env, static_cast<double>(a.apps[i].dev)));
            x.Set("ino", Napi::Number::New(env, static_cast<double>(a.apps[i].ino)));
            apps.Set(static_cast<uint32_t>(i), x);
          }
          Napi::Array procs = Napi::Array::New(env, a.processes.size());
          for (size_t i = 0; i < a.processes.size(); i++) {
            Napi::Object x = CountersToJs(env, a.processes[i].counters);
            x.Set("pid", Napi::Number::New(env, a.processes[i].pid));
            x.Set("dev", Napi::Number::New(env, static_cast<double>(a.processes[i].dev)));
            x.Set("ino", Napi::Number::New(env, static_cast<double>(a.processes[i].ino)));
            procs.Set(static_cast<uint32_t>(i), x);
          }
          o.Set("apps", apps);
          o.Set("processes", procs);
          return o;
        });
  }

  std::shared_ptr<BackendHost> host_;
  std::shared_ptr<EventBridge> events_;
  napi_env env_ = nullptr;
};

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Engine", Engine::Define(env));
#if defined(_WIN32)
  exports.Set("platform", Napi::String::New(env, "win32"));
#elif defined(__linux__)
  exports.Set("platform", Napi::String::New(env, "linux"));
#else
  exports.Set("platform", Napi::String::New(env, "unsupported"));
#endif
  return exports;
}

}  // namespace
}  // namespace netclamp

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return netclamp::Init(env, exports); }

NODE_API_MODULE(netclamp_addon, InitAddon)
