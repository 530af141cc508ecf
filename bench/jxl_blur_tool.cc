// libjxl's own blur (tools/gauss_blur: CreateRecursiveGaussian(1.5) + FastGaussian, exactly as
// tools/ssimulacra2.cc calls it) on raw float32 planes, for bench/perceptual_calibration.py
// --libjxl-blur-tool: it swaps this in for archiver.perceptual's exact FIR to show that the
// remaining differences to libjxl's ssimulacra2 tool come from the blur's float32 rounding.
//
//   jxl_blur_tool IN.f32 OUT.f32 XSIZE YSIZE NPLANES     (planes: NPLANES x YSIZE x XSIZE)
//
// Build inside a configured libjxl 0.11 CMake tree (tools enabled) with the compile and link
// lines ninja uses for tools/ssimulacra2 (`ninja -t commands tools/ssimulacra2`), this file in
// place of ssimulacra2_main.cc and without ssimulacra2.cc. BLUR_SSE4=1 forces Highway's SSE4
// path (on this machine its output equals the AVX2 path's).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include "tools/gauss_blur.h"
#include <hwy/targets.h>
int main(int argc, char** argv) {
  size_t xs = atol(argv[3]), ys = atol(argv[4]), np = atol(argv[5]);
  std::vector<float> in(xs * ys * np), out(xs * ys * np);
  FILE* f = fopen(argv[1], "rb"); fread(in.data(), 4, in.size(), f); fclose(f);
  if (getenv("BLUR_SSE4")) hwy::DisableTargets(HWY_AVX2 | HWY_AVX3 | HWY_AVX3_DL | HWY_AVX3_ZEN4 | HWY_AVX3_SPR);
  if (getenv("BLUR_TARGET")) fprintf(stderr, "target %s\n", hwy::TargetName(hwy::SupportedAndGeneratedTargets()[0]));
  jxl::RecursiveGaussian rg = jxl::CreateRecursiveGaussian(1.5);
  size_t stride = (xs + 63) / 64 * 64 + 64;
  float* bin = (float*)aligned_alloc(128, stride * ys * 4);
  float* btmp = (float*)aligned_alloc(128, stride * ys * 4);
  float* bout = (float*)aligned_alloc(128, stride * ys * 4);
  for (size_t p = 0; p < np; ++p) {
    memset(bin, 0, stride * ys * 4); memset(btmp, 0, stride * ys * 4); memset(bout, 0, stride * ys * 4);
    for (size_t y = 0; y < ys; ++y) memcpy(bin + y * stride, &in[(p * ys + y) * xs], xs * 4);
    if (!jxl::FastGaussian(rg, xs, ys, [&](size_t y) { return (const float*)(bin + y * stride); },
                           [&](size_t y) { return btmp + y * stride; },
                           [&](size_t y) { return bout + y * stride; })) return 1;
    for (size_t y = 0; y < ys; ++y) memcpy(&out[(p * ys + y) * xs], bout + y * stride, xs * 4);
  }
  f = fopen(argv[2], "wb"); fwrite(out.data(), 4, out.size(), f); fclose(f);
  return 0;
}
