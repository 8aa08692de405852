// oneDNN convolutions (and the stem's max pooling, below) as XLA FFI handlers: the CPU path of painseeker_jax
// (config.model.conv = "onednn"; painseeker_jax/onednn_conv.py compiles and registers this file).
//
// Layouts are JAX's: activations NHWC, kernels HWIO. Three handlers, each with attributes
// `stride` and `pad` (the same in both spatial dimensions, symmetric padding):
//   PainseekerOnednnConvFwd         (x, w)  -> y    forward
//   PainseekerOnednnConvBwdData     (dy, w) -> dx   gradient w.r.t. the input
//   PainseekerOnednnConvBwdWeights  (x, dy) -> dw   gradient w.r.t. the kernel
// oneDNN picks its own blocked weight layout; the HWIO kernel is reordered into it (and the
// kernel gradient back out of it) on every call. Primitives are cached per shape.
//
// XLA:CPU runs independent custom calls on several threads at once, so one cached primitive can
// execute concurrently (e.g. the kernel gradients of two layers of the same shape). Every
// primitive therefore uses a user-managed scratchpad, allocated per call: with oneDNN's default
// (library) scratchpad, concurrent executions of one primitive share its buffer, which crashed
// the gemm-based kernel-gradient convolution that oneDNN picks for small channel counts on
// AVX2-only CPUs (a segfault in im2col).
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include "xla/ffi/api/ffi.h"
#include "oneapi/dnnl/dnnl.hpp"
namespace ffi = xla::ffi;
using dnnl::memory;
using tag = memory::format_tag;
static dnnl::engine& eng() { static dnnl::engine e(dnnl::engine::kind::cpu, 0); return e; }
using Key = std::tuple<int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>;
struct Prim {
  dnnl::primitive p;
  memory::desc w_md;   // the weight layout the primitive wants
  memory::desc sp_md;  // its scratchpad (allocated per call)
  bool reorder;
};
static dnnl::primitive_attr user_scratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}
static std::map<Key, Prim> cache; static std::mutex mu;

static ffi::Error Run(int kind, ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b, ffi::ResultBuffer<ffi::F32> out,
                      int64_t stride, int64_t pad) {
  // kind 0: fwd (a=x NHWC, b=w HWIO, out=y); 1: bwd data (a=dy, b=w, out=dx); 2: bwd weights (a=x, b=dy, out=dw HWIO)
  auto xd = kind == 1 ? out->dimensions() : a.dimensions();
  auto wd = kind == 2 ? out->dimensions() : b.dimensions();
  auto yd = kind == 0 ? out->dimensions() : (kind == 1 ? a.dimensions() : b.dimensions());
  int64_t N = xd[0], H = xd[1], W = xd[2], C = xd[3], KH = wd[0], KW = wd[1], O = wd[3], Ho = yd[1], Wo = yd[2];
  memory::desc x_md({N, C, H, W}, memory::data_type::f32, tag::nhwc);
  memory::desc y_md({N, O, Ho, Wo}, memory::data_type::f32, tag::nhwc);
  memory::desc uw_md({O, C, KH, KW}, memory::data_type::f32, tag::hwio);
  memory::desc any_w({O, C, KH, KW}, memory::data_type::f32, tag::any);
  memory::dims s = {stride, stride}, p = {pad, pad};
  Key key{kind, N, H, W, C, O, KH, KW, stride, pad};
  Prim* pr;
  {
    std::lock_guard<std::mutex> l(mu);
    auto it = cache.find(key);
    if (it == cache.end()) {
      auto attr = user_scratchpad();
      auto fpd = dnnl::convolution_forward::primitive_desc(eng(), dnnl::prop_kind::forward_training,
          dnnl::algorithm::convolution_direct, x_md, any_w, y_md, s, p, p, attr);
      Prim q;
      if (kind == 0) { q.p = dnnl::convolution_forward(fpd); q.w_md = fpd.weights_desc(); q.sp_md = fpd.scratchpad_desc(); }
      if (kind == 1) { auto pd = dnnl::convolution_backward_data::primitive_desc(eng(), dnnl::algorithm::convolution_direct, x_md, any_w, y_md, s, p, p, fpd, attr);
                       q.p = dnnl::convolution_backward_data(pd); q.w_md = pd.weights_desc(); q.sp_md = pd.scratchpad_desc(); }
      if (kind == 2) { auto pd = dnnl::convolution_backward_weights::primitive_desc(eng(), dnnl::algorithm::convolution_direct, x_md, any_w, y_md, s, p, p, fpd, attr);
                       q.p = dnnl::convolution_backward_weights(pd); q.w_md = pd.diff_weights_desc(); q.sp_md = pd.scratchpad_desc(); }
      q.reorder = q.w_md != uw_md;
      it = cache.emplace(key, q).first;
    }
    pr = &it->second;
  }
  try {
  dnnl::stream st(eng());
  memory sp(pr->sp_md, eng());  // this call's own scratchpad
  if (kind == 0 || kind == 1) {
    memory uw(uw_md, eng(), b.typed_data()), w = uw;
    if (pr->reorder) { w = memory(pr->w_md, eng()); dnnl::reorder(uw, w).execute(st, uw, w); }
    if (kind == 0) pr->p.execute(st, {{DNNL_ARG_SRC, memory(x_md, eng(), a.typed_data())}, {DNNL_ARG_WEIGHTS, w},
                                      {DNNL_ARG_DST, memory(y_md, eng(), out->typed_data())}, {DNNL_ARG_SCRATCHPAD, sp}});
    else pr->p.execute(st, {{DNNL_ARG_DIFF_DST, memory(y_md, eng(), a.typed_data())}, {DNNL_ARG_WEIGHTS, w},
                            {DNNL_ARG_DIFF_SRC, memory(x_md, eng(), out->typed_data())}, {DNNL_ARG_SCRATCHPAD, sp}});
  } else {
    memory uw(uw_md, eng(), out->typed_data()), w = uw;
    if (pr->reorder) w = memory(pr->w_md, eng());
    pr->p.execute(st, {{DNNL_ARG_SRC, memory(x_md, eng(), a.typed_data())}, {DNNL_ARG_DIFF_DST, memory(y_md, eng(), b.typed_data())},
                       {DNNL_ARG_DIFF_WEIGHTS, w}, {DNNL_ARG_SCRATCHPAD, sp}});
    if (pr->reorder) dnnl::reorder(w, uw).execute(st, w, uw);
  }
  st.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN convolution failed: ") + e.what());
  }
  return ffi::Error::Success();
}
// Max pooling, square `kernel`, `stride` and symmetric `pad` (padding never wins, as in PyTorch's
// MaxPool2d and flax's max_pool). Training forward writes oneDNN's workspace (the argmax of each
// window, one byte per output element) for the backward:
//   PainseekerOnednnMaxPoolFwd  (x) -> (y, ws)
//   PainseekerOnednnMaxPoolBwd  (dy, ws) -> dx
using PKey = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>;
struct Pool {
  dnnl::pooling_forward fwd;
  dnnl::pooling_backward bwd;
  memory::desc x_md, y_md, ws_md, fwd_sp_md, bwd_sp_md;
};
static std::map<PKey, Pool> pool_cache;
static const char* kWsError = "oneDNN max pooling: its workspace is not one byte per output element";

// nullptr when oneDNN's workspace is not the one byte per output element the callers allocate.
static Pool* GetPool(ffi::Span<const int64_t> xd, ffi::Span<const int64_t> yd, int64_t kernel,
                     int64_t stride, int64_t pad) {
  int64_t N = xd[0], H = xd[1], W = xd[2], C = xd[3], Ho = yd[1], Wo = yd[2];
  PKey key{N, H, W, C, kernel, stride, pad};  // the output size follows from these
  std::lock_guard<std::mutex> l(mu);
  auto it = pool_cache.find(key);
  if (it != pool_cache.end()) return &it->second;
  Pool q;
  q.x_md = memory::desc({N, C, H, W}, memory::data_type::f32, tag::nhwc);
  q.y_md = memory::desc({N, C, Ho, Wo}, memory::data_type::f32, tag::nhwc);
  memory::dims k = {kernel, kernel}, s = {stride, stride}, p = {pad, pad}, d = {0, 0};
  auto attr = user_scratchpad();
  auto fpd = dnnl::pooling_forward::primitive_desc(eng(), dnnl::prop_kind::forward_training,
      dnnl::algorithm::pooling_max, q.x_md, q.y_md, s, k, d, p, p, attr);
  auto bpd = dnnl::pooling_backward::primitive_desc(eng(), dnnl::algorithm::pooling_max, q.x_md, q.y_md,
      s, k, d, p, p, fpd, attr);
  q.ws_md = fpd.workspace_desc();
  q.fwd_sp_md = fpd.scratchpad_desc();
  q.bwd_sp_md = bpd.scratchpad_desc();
  if (q.ws_md.get_size() != static_cast<size_t>(N * Ho * Wo * C)) return nullptr;
  q.fwd = dnnl::pooling_forward(fpd);
  q.bwd = dnnl::pooling_backward(bpd);
  return &pool_cache.emplace(key, q).first->second;
}

static ffi::Error PoolFwdImpl(ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> y, ffi::ResultBuffer<ffi::U8> ws,
                              int64_t kernel, int64_t stride, int64_t pad) {
  try {
    Pool* pl = GetPool(x.dimensions(), y->dimensions(), kernel, stride, pad);
    if (!pl) return ffi::Error(ffi::ErrorCode::kInternal, kWsError);
    dnnl::stream st(eng());
    pl->fwd.execute(st, {{DNNL_ARG_SRC, memory(pl->x_md, eng(), x.typed_data())},
                         {DNNL_ARG_DST, memory(pl->y_md, eng(), y->typed_data())},
                         {DNNL_ARG_WORKSPACE, memory(pl->ws_md, eng(), ws->typed_data())},
                         {DNNL_ARG_SCRATCHPAD, memory(pl->fwd_sp_md, eng())}});
    st.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN max pooling failed: ") + e.what());
  }
  return ffi::Error::Success();
}

static ffi::Error PoolBwdImpl(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::U8> ws, ffi::ResultBuffer<ffi::F32> dx,
                              int64_t kernel, int64_t stride, int64_t pad) {
  try {
    Pool* pl = GetPool(dx->dimensions(), dy.dimensions(), kernel, stride, pad);
    if (!pl) return ffi::Error(ffi::ErrorCode::kInternal, kWsError);
    dnnl::stream st(eng());
    pl->bwd.execute(st, {{DNNL_ARG_DIFF_DST, memory(pl->y_md, eng(), dy.typed_data())},
                         {DNNL_ARG_WORKSPACE, memory(pl->ws_md, eng(), ws.typed_data())},
                         {DNNL_ARG_DIFF_SRC, memory(pl->x_md, eng(), dx->typed_data())},
                         {DNNL_ARG_SCRATCHPAD, memory(pl->bwd_sp_md, eng())}});
    st.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN max pooling backward failed: ") + e.what());
  }
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(PainseekerOnednnMaxPoolFwd, PoolFwdImpl,
    ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::U8>>()
        .Attr<int64_t>("kernel").Attr<int64_t>("stride").Attr<int64_t>("pad"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(PainseekerOnednnMaxPoolBwd, PoolBwdImpl,
    ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Arg<ffi::Buffer<ffi::U8>>().Ret<ffi::Buffer<ffi::F32>>()
        .Attr<int64_t>("kernel").Attr<int64_t>("stride").Attr<int64_t>("pad"));

#define H(name, k) \
  static ffi::Error name##Impl(ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b, ffi::ResultBuffer<ffi::F32> o, int64_t s, int64_t p) { return Run(k, a, b, o, s, p); } \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, name##Impl, ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>().Attr<int64_t>("stride").Attr<int64_t>("pad"));
H(PainseekerOnednnConvFwd, 0)
H(PainseekerOnednnConvBwdData, 1)
H(PainseekerOnednnConvBwdWeights, 2)
