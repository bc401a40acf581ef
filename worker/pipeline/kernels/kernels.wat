;; Element-wise kernels of the denoising loop and the image conversion, in WebAssembly SIMD.
;;
;; Loop kernels compute exactly what the plain JavaScript loops before them computed: float32
;; inputs are widened to float64, the arithmetic runs in float64 in the order of the JavaScript
;; expression (JavaScript numbers are doubles, and engines do not fuse a·b + c), and the result
;; is rounded to float32 once, as a Float32Array store does; Math.fround inside an expression is
;; a demote then a promote. A loop turn takes four values: lanes 0–1 and lanes 2–3 each go
;; through f64x2 arithmetic. Everything is written out in place: V8 does not inline calls
;; between WebAssembly functions, and a call per lane pair cost more than the arithmetic.
;;
;; Arguments are byte offsets into the memory and a count of values, a multiple of 4 (callers
;; pad); offsets are 16-byte aligned. Compiled to kernels.wasm by `npm run build:kernels`; a
;; test checks the two agree.
(module
  ;; Each arena (index.ts) instantiates this module over its own memory.
  (import "env" "memory" (memory 1))

  ;; Classifier-free guidance: out = u + s·(c − u).
  (func (export "guidance") (param $u i32) (param $c i32) (param $out i32) (param $n i32) (param $s f64)
    (local $end i32) (local $sv v128) (local $uv v128) (local $cv v128)
    (local.set $sv (f64x2.splat (local.get $s)))
    (local.set $end (i32.add (local.get $out) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $out) (local.get $end)))
        (local.set $uv (v128.load (local.get $u)))
        (local.set $cv (v128.load (local.get $c)))
        (v128.store
          (local.get $out)
          (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
            (f32x4.demote_f64x2_zero
              (f64x2.add
                (f64x2.promote_low_f32x4 (local.get $uv))
                (f64x2.mul
                  (local.get $sv)
                  (f64x2.sub
                    (f64x2.promote_low_f32x4 (local.get $cv))
                    (f64x2.promote_low_f32x4 (local.get $uv))))))
            (f32x4.demote_f64x2_zero
              (f64x2.add
                (f64x2.promote_low_f32x4
                  (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                    (local.get $uv)
                    (local.get $uv)))
                (f64x2.mul
                  (local.get $sv)
                  (f64x2.sub
                    (f64x2.promote_low_f32x4
                      (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                        (local.get $cv)
                        (local.get $cv)))
                    (f64x2.promote_low_f32x4
                      (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                        (local.get $uv)
                        (local.get $uv)))))))))
        (local.set $u (i32.add (local.get $u) (i32.const 16)))
        (local.set $c (i32.add (local.get $c) (i32.const 16)))
        (local.set $out (i32.add (local.get $out) (i32.const 16)))
        (br $next))))

  ;; PLMS (Adams–Bashforth on ε, Liu et al. 2022 eq. 12) then PNDM's formula (9), for ε
  ;; prediction: ε′ from the newest ε (e₁) and its history, rounded to float32 (orders 2–4), then
  ;; out = sc·x − ec·ε′.
  ;; order 1: ε′ = e₁ (formula 9 alone)
  (func (export "plms1") (param $e1 i32) (param $x i32) (param $out i32) (param $n i32)
    (param $sc f64) (param $ec f64)
    (local $end i32) (local $scv v128) (local $ecv v128) (local $e1v v128) (local $xv v128)
    (local.set $scv (f64x2.splat (local.get $sc)))
    (local.set $ecv (f64x2.splat (local.get $ec)))
    (local.set $end (i32.add (local.get $out) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $out) (local.get $end)))
        (local.set $e1v (v128.load (local.get $e1)))
        (local.set $xv (v128.load (local.get $x)))
        (v128.store
          (local.get $out)
          (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
            (f32x4.demote_f64x2_zero
              (f64x2.sub
                (f64x2.mul (local.get $scv) (f64x2.promote_low_f32x4 (local.get $xv)))
                (f64x2.mul (local.get $ecv) (f64x2.promote_low_f32x4 (local.get $e1v)))))
            (f32x4.demote_f64x2_zero
              (f64x2.sub
                (f64x2.mul
                  (local.get $scv)
                  (f64x2.promote_low_f32x4
                    (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                      (local.get $xv)
                      (local.get $xv))))
                (f64x2.mul
                  (local.get $ecv)
                  (f64x2.promote_low_f32x4
                    (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                      (local.get $e1v)
                      (local.get $e1v))))))))
        (local.set $e1 (i32.add (local.get $e1) (i32.const 16)))
        (local.set $x (i32.add (local.get $x) (i32.const 16)))
        (local.set $out (i32.add (local.get $out) (i32.const 16)))
        (br $next))))

  ;; order 2: ε′ = (3e₁ − e₂) / 2
  (func (export "plms2") (param $e1 i32) (param $e2 i32) (param $x i32) (param $out i32) (param $n i32)
    (param $sc f64) (param $ec f64)
    (local $end i32) (local $scv v128) (local $ecv v128) (local $e1v v128) (local $e2v v128) (local $xv v128)
    (local.set $scv (f64x2.splat (local.get $sc)))
    (local.set $ecv (f64x2.splat (local.get $ec)))
    (local.set $end (i32.add (local.get $out) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $out) (local.get $end)))
        (local.set $e1v (v128.load (local.get $e1)))
        (local.set $e2v (v128.load (local.get $e2)))
        (local.set $xv (v128.load (local.get $x)))
        (v128.store
          (local.get $out)
          (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
            (f32x4.demote_f64x2_zero
              (f64x2.sub
                (f64x2.mul (local.get $scv) (f64x2.promote_low_f32x4 (local.get $xv)))
                (f64x2.mul
                  (local.get $ecv)
                  (f64x2.promote_low_f32x4
                    (f32x4.demote_f64x2_zero
                      (f64x2.div
                        (f64x2.sub
                          (f64x2.mul
                            (f64x2.splat (f64.const 3))
                            (f64x2.promote_low_f32x4 (local.get $e1v)))
                          (f64x2.promote_low_f32x4 (local.get $e2v)))
                        (f64x2.splat (f64.const 2))))))))
            (f32x4.demote_f64x2_zero
              (f64x2.sub
                (f64x2.mul
                  (local.get $scv)
                  (f64x2.promote_low_f32x4
                    (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                      (local.get $xv)
                      (local.get $xv))))
                (f64x2.mul
                  (local.get $ecv)
                  (f64x2.promote_low_f32x4
                    (f32x4.demote_f64x2_zero
                      (f64x2.div
                        (f64x2.sub
                          (f64x2.mul
                            (f64x2.splat (f64.const 3))
                            (f64x2.promote_low_f32x4
                              (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                                (local.get $e1v)
                                (local.get $e1v))))
                          (f64x2.promote_low_f32x4
                            (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                              (local.get $e2v)
                              (local.get $e2v))))
                        (f64x2.splat (f64.const 2))))))))))
        (local.set $e1 (i32.add (local.get $e1) (i32.const 16)))
        (local.set $e2 (i32.add (local.get $e2) (i32.const 16)))
        (local.set $x (i32.add (local.get $x) (i32.const 16)))
        (local.set $out (i32.add (local.get $out) (i32.const 16)))
        (br $next))))

  ;; order 3: ε′ = (23e₁ − 16e₂ + 5e₃) / 12
  (func (export "plms3") (param $e1 i32) (param $e2 i32) (param $e3 i32) (param $x i32) (param $out i32) (param $n i32)
    (param $sc f64) (param $ec f64)
    (local $end i32) (local $scv v128) (local $ecv v128) (local $e1v v128) (local $e2v v128) (local $e3v v128) (local $xv v128)
    (local.set $scv (f64x2.splat (local.get $sc)))
    (local.set $ecv (f64x2.splat (local.get $ec)))
    (local.set $end (i32.add (local.get $out) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $out) (local.get $end)))
        (local.set $e1v (v128.load (local.get $e1)))
        (local.set $e2v (v128.load (local.get $e2)))
        (local.set $e3v (v128.load (local.get $e3)))
        (local.set $xv (v128.load (local.get $x)))
        (v128.store
          (local.get $out)
          (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
            (f32x4.demote_f64x2_zero
              (f64x2.sub
                (f64x2.mul (local.get $scv) (f64x2.promote_low_f32x4 (local.get $xv)))
                (f64x2.mul
                  (local.get $ecv)
                  (f64x2.promote_low_f32x4
                    (f32x4.demote_f64x2_zero
                      (f64x2.div
                        (f64x2.add
                          (f64x2.sub
                            (f64x2.mul
                              (f64x2.splat (f64.const 23))
                              (f64x2.promote_low_f32x4 (local.get $e1v)))
                            (f64x2.mul
                              (f64x2.splat (f64.const 16))
                              (f64x2.promote_low_f32x4 (local.get $e2v))))
                          (f64x2.mul
                            (f64x2.splat (f64.const 5))
                            (f64x2.promote_low_f32x4 (local.get $e3v))))
                        (f64x2.splat (f64.const 12))))))))
            (f32x4.demote_f64x2_zero
              (f64x2.sub
                (f64x2.mul
                  (local.get $scv)
                  (f64x2.promote_low_f32x4
                    (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                      (local.get $xv)
                      (local.get $xv))))
                (f64x2.mul
                  (local.get $ecv)
                  (f64x2.promote_low_f32x4
                    (f32x4.demote_f64x2_zero
                      (f64x2.div
                        (f64x2.add
                          (f64x2.sub
                            (f64x2.mul
                              (f64x2.splat (f64.const 23))
                              (f64x2.promote_low_f32x4
                                (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                                  (local.get $e1v)
                                  (local.get $e1v))))
                            (f64x2.mul
                              (f64x2.splat (f64.const 16))
                              (f64x2.promote_low_f32x4
                                (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                                  (local.get $e2v)
                                  (local.get $e2v)))))
                          (f64x2.mul
                            (f64x2.splat (f64.const 5))
                            (f64x2.promote_low_f32x4
                              (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                                (local.get $e3v)
                                (local.get $e3v)))))
                        (f64x2.splat (f64.const 12))))))))))
        (local.set $e1 (i32.add (local.get $e1) (i32.const 16)))
        (local.set $e2 (i32.add (local.get $e2) (i32.const 16)))
        (local.set $e3 (i32.add (local.get $e3) (i32.const 16)))
        (local.set $x (i32.add (local.get $x) (i32.const 16)))
        (local.set $out (i32.add (local.get $out) (i32.const 16)))
        (br $next))))

  ;; order 4: ε′ = (1/24)·(55e₁ − 59e₂ + 37e₃ − 9e₄), 1/24 as a double
  (func (export "plms4") (param $e1 i32) (param $e2 i32) (param $e3 i32) (param $e4 i32) (param $x i32) (param $out i32) (param $n i32)
    (param $sc f64) (param $ec f64)
    (local $end i32) (local $scv v128) (local $ecv v128) (local $e1v v128) (local $e2v v128) (local $e3v v128) (local $e4v v128) (local $xv v128)
    (local.set $scv (f64x2.splat (local.get $sc)))
    (local.set $ecv (f64x2.splat (local.get $ec)))
    (local.set $end (i32.add (local.get $out) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $out) (local.get $end)))
        (local.set $e1v (v128.load (local.get $e1)))
        (local.set $e2v (v128.load (local.get $e2)))
        (local.set $e3v (v128.load (local.get $e3)))
        (local.set $e4v (v128.load (local.get $e4)))
        (local.set $xv (v128.load (local.get $x)))
        (v128.store
          (local.get $out)
          (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
            (f32x4.demote_f64x2_zero
              (f64x2.sub
                (f64x2.mul (local.get $scv) (f64x2.promote_low_f32x4 (local.get $xv)))
                (f64x2.mul
                  (local.get $ecv)
                  (f64x2.promote_low_f32x4
                    (f32x4.demote_f64x2_zero
                      (f64x2.mul
                        (f64x2.splat (f64.const 0.041666666666666664))
                        (f64x2.sub
                          (f64x2.add
                            (f64x2.sub
                              (f64x2.mul
                                (f64x2.splat (f64.const 55))
                                (f64x2.promote_low_f32x4 (local.get $e1v)))
                              (f64x2.mul
                                (f64x2.splat (f64.const 59))
                                (f64x2.promote_low_f32x4 (local.get $e2v))))
                            (f64x2.mul
                              (f64x2.splat (f64.const 37))
                              (f64x2.promote_low_f32x4 (local.get $e3v))))
                          (f64x2.mul
                            (f64x2.splat (f64.const 9))
                            (f64x2.promote_low_f32x4 (local.get $e4v))))))))))
            (f32x4.demote_f64x2_zero
              (f64x2.sub
                (f64x2.mul
                  (local.get $scv)
                  (f64x2.promote_low_f32x4
                    (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                      (local.get $xv)
                      (local.get $xv))))
                (f64x2.mul
                  (local.get $ecv)
                  (f64x2.promote_low_f32x4
                    (f32x4.demote_f64x2_zero
                      (f64x2.mul
                        (f64x2.splat (f64.const 0.041666666666666664))
                        (f64x2.sub
                          (f64x2.add
                            (f64x2.sub
                              (f64x2.mul
                                (f64x2.splat (f64.const 55))
                                (f64x2.promote_low_f32x4
                                  (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                                    (local.get $e1v)
                                    (local.get $e1v))))
                              (f64x2.mul
                                (f64x2.splat (f64.const 59))
                                (f64x2.promote_low_f32x4
                                  (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                                    (local.get $e2v)
                                    (local.get $e2v)))))
                            (f64x2.mul
                              (f64x2.splat (f64.const 37))
                              (f64x2.promote_low_f32x4
                                (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                                  (local.get $e3v)
                                  (local.get $e3v)))))
                          (f64x2.mul
                            (f64x2.splat (f64.const 9))
                            (f64x2.promote_low_f32x4
                              (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                                (local.get $e4v)
                                (local.get $e4v)))))))))))))
        (local.set $e1 (i32.add (local.get $e1) (i32.const 16)))
        (local.set $e2 (i32.add (local.get $e2) (i32.const 16)))
        (local.set $e3 (i32.add (local.get $e3) (i32.const 16)))
        (local.set $e4 (i32.add (local.get $e4) (i32.const 16)))
        (local.set $x (i32.add (local.get $x) (i32.const 16)))
        (local.set $out (i32.add (local.get $out) (i32.const 16)))
        (br $next))))

  ;; The σ schedulers' scale_model_input: out = x / d (d = √(σ² + 1) in float32).
  (func (export "divide") (param $x i32) (param $out i32) (param $n i32)
    (param $d f64)
    (local $end i32) (local $xv v128) (local $d2 v128)
    (local.set $d2 (f64x2.splat (local.get $d)))
    (local.set $end (i32.add (local.get $out) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $out) (local.get $end)))
        (local.set $xv (v128.load (local.get $x)))
        (v128.store
          (local.get $out)
          (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
            (f32x4.demote_f64x2_zero
              (f64x2.div (f64x2.promote_low_f32x4 (local.get $xv)) (local.get $d2)))
            (f32x4.demote_f64x2_zero
              (f64x2.div
                (f64x2.promote_low_f32x4
                  (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                    (local.get $xv)
                    (local.get $xv)))
                (local.get $d2)))))
        (local.set $x (i32.add (local.get $x) (i32.const 16)))
        (local.set $out (i32.add (local.get $out) (i32.const 16)))
        (br $next))))

  ;; Euler step (Karras et al. 2022, alg. 2 with γ = 0): x₀ = c_skip·x + c_out·m,
  ;; d = (x − x₀)/σ, out = x + d·dt.
  (func (export "euler") (param $x i32) (param $m i32) (param $out i32) (param $n i32)
    (param $cskip f64) (param $cout f64) (param $sigma f64) (param $dt f64)
    (local $end i32) (local $xv v128) (local $mv v128) (local $cskip2 v128) (local $cout2 v128) (local $sigma2 v128) (local $dt2 v128)
    (local.set $cskip2 (f64x2.splat (local.get $cskip)))
    (local.set $cout2 (f64x2.splat (local.get $cout)))
    (local.set $sigma2 (f64x2.splat (local.get $sigma)))
    (local.set $dt2 (f64x2.splat (local.get $dt)))
    (local.set $end (i32.add (local.get $out) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $out) (local.get $end)))
        (local.set $xv (v128.load (local.get $x)))
        (local.set $mv (v128.load (local.get $m)))
        (v128.store
          (local.get $out)
          (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
            (f32x4.demote_f64x2_zero
              (f64x2.add
                (f64x2.promote_low_f32x4 (local.get $xv))
                (f64x2.mul
                  (f64x2.div
                    (f64x2.sub
                      (f64x2.promote_low_f32x4 (local.get $xv))
                      (f64x2.add
                        (f64x2.mul (local.get $cskip2) (f64x2.promote_low_f32x4 (local.get $xv)))
                        (f64x2.mul (local.get $cout2) (f64x2.promote_low_f32x4 (local.get $mv)))))
                    (local.get $sigma2))
                  (local.get $dt2))))
            (f32x4.demote_f64x2_zero
              (f64x2.add
                (f64x2.promote_low_f32x4
                  (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                    (local.get $xv)
                    (local.get $xv)))
                (f64x2.mul
                  (f64x2.div
                    (f64x2.sub
                      (f64x2.promote_low_f32x4
                        (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                          (local.get $xv)
                          (local.get $xv)))
                      (f64x2.add
                        (f64x2.mul
                          (local.get $cskip2)
                          (f64x2.promote_low_f32x4
                            (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                              (local.get $xv)
                              (local.get $xv))))
                        (f64x2.mul
                          (local.get $cout2)
                          (f64x2.promote_low_f32x4
                            (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                              (local.get $mv)
                              (local.get $mv))))))
                    (local.get $sigma2))
                  (local.get $dt2))))))
        (local.set $x (i32.add (local.get $x) (i32.const 16)))
        (local.set $m (i32.add (local.get $m) (i32.const 16)))
        (local.set $out (i32.add (local.get $out) (i32.const 16)))
        (br $next))))

  ;; Euler ancestral step: as `euler` to σ_down, plus noise z of scale σ_up:
  ;; out = x + d·dt + z·σ_up.
  (func (export "euler_ancestral") (param $x i32) (param $m i32) (param $z i32) (param $out i32) (param $n i32)
    (param $cskip f64) (param $cout f64) (param $sigma f64) (param $dt f64) (param $up f64)
    (local $end i32) (local $xv v128) (local $mv v128) (local $zv v128) (local $cskip2 v128) (local $cout2 v128) (local $sigma2 v128) (local $dt2 v128) (local $up2 v128)
    (local.set $cskip2 (f64x2.splat (local.get $cskip)))
    (local.set $cout2 (f64x2.splat (local.get $cout)))
    (local.set $sigma2 (f64x2.splat (local.get $sigma)))
    (local.set $dt2 (f64x2.splat (local.get $dt)))
    (local.set $up2 (f64x2.splat (local.get $up)))
    (local.set $end (i32.add (local.get $out) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $out) (local.get $end)))
        (local.set $xv (v128.load (local.get $x)))
        (local.set $mv (v128.load (local.get $m)))
        (local.set $zv (v128.load (local.get $z)))
        (v128.store
          (local.get $out)
          (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
            (f32x4.demote_f64x2_zero
              (f64x2.add
                (f64x2.add
                  (f64x2.promote_low_f32x4 (local.get $xv))
                  (f64x2.mul
                    (f64x2.div
                      (f64x2.sub
                        (f64x2.promote_low_f32x4 (local.get $xv))
                        (f64x2.add
                          (f64x2.mul (local.get $cskip2) (f64x2.promote_low_f32x4 (local.get $xv)))
                          (f64x2.mul (local.get $cout2) (f64x2.promote_low_f32x4 (local.get $mv)))))
                      (local.get $sigma2))
                    (local.get $dt2)))
                (f64x2.mul (f64x2.promote_low_f32x4 (local.get $zv)) (local.get $up2))))
            (f32x4.demote_f64x2_zero
              (f64x2.add
                (f64x2.add
                  (f64x2.promote_low_f32x4
                    (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                      (local.get $xv)
                      (local.get $xv)))
                  (f64x2.mul
                    (f64x2.div
                      (f64x2.sub
                        (f64x2.promote_low_f32x4
                          (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                            (local.get $xv)
                            (local.get $xv)))
                        (f64x2.add
                          (f64x2.mul
                            (local.get $cskip2)
                            (f64x2.promote_low_f32x4
                              (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                                (local.get $xv)
                                (local.get $xv))))
                          (f64x2.mul
                            (local.get $cout2)
                            (f64x2.promote_low_f32x4
                              (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                                (local.get $mv)
                                (local.get $mv))))))
                      (local.get $sigma2))
                    (local.get $dt2)))
                (f64x2.mul
                  (f64x2.promote_low_f32x4
                    (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                      (local.get $zv)
                      (local.get $zv)))
                  (local.get $up2))))))
        (local.set $x (i32.add (local.get $x) (i32.const 16)))
        (local.set $m (i32.add (local.get $m) (i32.const 16)))
        (local.set $z (i32.add (local.get $z) (i32.const 16)))
        (local.set $out (i32.add (local.get $out) (i32.const 16)))
        (br $next))))

  ;; DPM-Solver++ data prediction from ε: x₀ = (x − σ·m)/α.
  (func (export "dpm_data_from_eps") (param $x i32) (param $m i32) (param $out i32) (param $n i32)
    (param $sigma f64) (param $alpha f64)
    (local $end i32) (local $xv v128) (local $mv v128) (local $sigma2 v128) (local $alpha2 v128)
    (local.set $sigma2 (f64x2.splat (local.get $sigma)))
    (local.set $alpha2 (f64x2.splat (local.get $alpha)))
    (local.set $end (i32.add (local.get $out) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $out) (local.get $end)))
        (local.set $xv (v128.load (local.get $x)))
        (local.set $mv (v128.load (local.get $m)))
        (v128.store
          (local.get $out)
          (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
            (f32x4.demote_f64x2_zero
              (f64x2.div
                (f64x2.sub
                  (f64x2.promote_low_f32x4 (local.get $xv))
                  (f64x2.mul (local.get $sigma2) (f64x2.promote_low_f32x4 (local.get $mv))))
                (local.get $alpha2)))
            (f32x4.demote_f64x2_zero
              (f64x2.div
                (f64x2.sub
                  (f64x2.promote_low_f32x4
                    (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                      (local.get $xv)
                      (local.get $xv)))
                  (f64x2.mul
                    (local.get $sigma2)
                    (f64x2.promote_low_f32x4
                      (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                        (local.get $mv)
                        (local.get $mv)))))
                (local.get $alpha2)))))
        (local.set $x (i32.add (local.get $x) (i32.const 16)))
        (local.set $m (i32.add (local.get $m) (i32.const 16)))
        (local.set $out (i32.add (local.get $out) (i32.const 16)))
        (br $next))))

  ;; DPM-Solver first order without noise: out = sc·x + mc·m₀ + 0 (the loop added
  ;; its zero noise term, which turns −0 into +0).
  (func (export "dpm_first") (param $x i32) (param $m0 i32) (param $out i32) (param $n i32)
    (param $sc f64) (param $mc f64)
    (local $end i32) (local $xv v128) (local $m0v v128) (local $sc2 v128) (local $mc2 v128)
    (local.set $sc2 (f64x2.splat (local.get $sc)))
    (local.set $mc2 (f64x2.splat (local.get $mc)))
    (local.set $end (i32.add (local.get $out) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $out) (local.get $end)))
        (local.set $xv (v128.load (local.get $x)))
        (local.set $m0v (v128.load (local.get $m0)))
        (v128.store
          (local.get $out)
          (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
            (f32x4.demote_f64x2_zero
              (f64x2.add
                (f64x2.add
                  (f64x2.mul (local.get $sc2) (f64x2.promote_low_f32x4 (local.get $xv)))
                  (f64x2.mul (local.get $mc2) (f64x2.promote_low_f32x4 (local.get $m0v))))
                (f64x2.splat (f64.const 0))))
            (f32x4.demote_f64x2_zero
              (f64x2.add
                (f64x2.add
                  (f64x2.mul
                    (local.get $sc2)
                    (f64x2.promote_low_f32x4
                      (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                        (local.get $xv)
                        (local.get $xv))))
                  (f64x2.mul
                    (local.get $mc2)
                    (f64x2.promote_low_f32x4
                      (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                        (local.get $m0v)
                        (local.get $m0v)))))
                (f64x2.splat (f64.const 0))))))
        (local.set $x (i32.add (local.get $x) (i32.const 16)))
        (local.set $m0 (i32.add (local.get $m0) (i32.const 16)))
        (local.set $out (i32.add (local.get $out) (i32.const 16)))
        (br $next))))

  ;; DPM-Solver multistep second order without noise: D₁ = (1/r₀)·(m₀ − m₁),
  ;; out = sc·x + c₀·m₀ + c₁·D₁ + 0.
  (func (export "dpm_second") (param $x i32) (param $m0 i32) (param $m1 i32) (param $out i32) (param $n i32)
    (param $sc f64) (param $c0 f64) (param $c1 f64) (param $inv f64)
    (local $end i32) (local $xv v128) (local $m0v v128) (local $m1v v128) (local $sc2 v128) (local $c02 v128) (local $c12 v128) (local $inv2 v128)
    (local.set $sc2 (f64x2.splat (local.get $sc)))
    (local.set $c02 (f64x2.splat (local.get $c0)))
    (local.set $c12 (f64x2.splat (local.get $c1)))
    (local.set $inv2 (f64x2.splat (local.get $inv)))
    (local.set $end (i32.add (local.get $out) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $out) (local.get $end)))
        (local.set $xv (v128.load (local.get $x)))
        (local.set $m0v (v128.load (local.get $m0)))
        (local.set $m1v (v128.load (local.get $m1)))
        (v128.store
          (local.get $out)
          (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
            (f32x4.demote_f64x2_zero
              (f64x2.add
                (f64x2.add
                  (f64x2.add
                    (f64x2.mul (local.get $sc2) (f64x2.promote_low_f32x4 (local.get $xv)))
                    (f64x2.mul (local.get $c02) (f64x2.promote_low_f32x4 (local.get $m0v))))
                  (f64x2.mul
                    (local.get $c12)
                    (f64x2.mul
                      (local.get $inv2)
                      (f64x2.sub
                        (f64x2.promote_low_f32x4 (local.get $m0v))
                        (f64x2.promote_low_f32x4 (local.get $m1v))))))
                (f64x2.splat (f64.const 0))))
            (f32x4.demote_f64x2_zero
              (f64x2.add
                (f64x2.add
                  (f64x2.add
                    (f64x2.mul
                      (local.get $sc2)
                      (f64x2.promote_low_f32x4
                        (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                          (local.get $xv)
                          (local.get $xv))))
                    (f64x2.mul
                      (local.get $c02)
                      (f64x2.promote_low_f32x4
                        (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                          (local.get $m0v)
                          (local.get $m0v)))))
                  (f64x2.mul
                    (local.get $c12)
                    (f64x2.mul
                      (local.get $inv2)
                      (f64x2.sub
                        (f64x2.promote_low_f32x4
                          (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                            (local.get $m0v)
                            (local.get $m0v)))
                        (f64x2.promote_low_f32x4
                          (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                            (local.get $m1v)
                            (local.get $m1v)))))))
                (f64x2.splat (f64.const 0))))))
        (local.set $x (i32.add (local.get $x) (i32.const 16)))
        (local.set $m0 (i32.add (local.get $m0) (i32.const 16)))
        (local.set $m1 (i32.add (local.get $m1) (i32.const 16)))
        (local.set $out (i32.add (local.get $out) (i32.const 16)))
        (br $next))))

  ;; DDIM (η = 0, Song et al. 2021 eq. 12) for ε prediction: x₀ = (x − √β·m)/√α, clipped
  ;; to ±range (∞ when off), out = √α_prev·x₀ + √(1 − α_prev)·m.
  (func (export "ddim_eps") (param $x i32) (param $m i32) (param $out i32) (param $n i32)
    (param $sb f64) (param $sa f64) (param $range f64) (param $ap f64) (param $dir f64)
    (local $end i32) (local $xv v128) (local $mv v128) (local $sb2 v128) (local $sa2 v128) (local $range2 v128) (local $ap2 v128) (local $dir2 v128)
    (local.set $sb2 (f64x2.splat (local.get $sb)))
    (local.set $sa2 (f64x2.splat (local.get $sa)))
    (local.set $range2 (f64x2.splat (local.get $range)))
    (local.set $ap2 (f64x2.splat (local.get $ap)))
    (local.set $dir2 (f64x2.splat (local.get $dir)))
    (local.set $end (i32.add (local.get $out) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $out) (local.get $end)))
        (local.set $xv (v128.load (local.get $x)))
        (local.set $mv (v128.load (local.get $m)))
        (v128.store
          (local.get $out)
          (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
            (f32x4.demote_f64x2_zero
              (f64x2.add
                (f64x2.mul
                  (local.get $ap2)
                  (f64x2.min
                    (f64x2.max
                      (f64x2.div
                        (f64x2.sub
                          (f64x2.promote_low_f32x4 (local.get $xv))
                          (f64x2.mul (local.get $sb2) (f64x2.promote_low_f32x4 (local.get $mv))))
                        (local.get $sa2))
                      (f64x2.neg (local.get $range2)))
                    (local.get $range2)))
                (f64x2.mul (local.get $dir2) (f64x2.promote_low_f32x4 (local.get $mv)))))
            (f32x4.demote_f64x2_zero
              (f64x2.add
                (f64x2.mul
                  (local.get $ap2)
                  (f64x2.min
                    (f64x2.max
                      (f64x2.div
                        (f64x2.sub
                          (f64x2.promote_low_f32x4
                            (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                              (local.get $xv)
                              (local.get $xv)))
                          (f64x2.mul
                            (local.get $sb2)
                            (f64x2.promote_low_f32x4
                              (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                                (local.get $mv)
                                (local.get $mv)))))
                        (local.get $sa2))
                      (f64x2.neg (local.get $range2)))
                    (local.get $range2)))
                (f64x2.mul
                  (local.get $dir2)
                  (f64x2.promote_low_f32x4
                    (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                      (local.get $mv)
                      (local.get $mv))))))))
        (local.set $x (i32.add (local.get $x) (i32.const 16)))
        (local.set $m (i32.add (local.get $m) (i32.const 16)))
        (local.set $out (i32.add (local.get $out) (i32.const 16)))
        (br $next))))

  ;; DDIM for v prediction: x₀ = √α·x − √β·v (clipped), ε = √α·v + √β·x,
  ;; out = √α_prev·x₀ + √(1 − α_prev)·ε.
  (func (export "ddim_v") (param $x i32) (param $m i32) (param $out i32) (param $n i32)
    (param $sb f64) (param $sa f64) (param $range f64) (param $ap f64) (param $dir f64)
    (local $end i32) (local $xv v128) (local $mv v128) (local $sb2 v128) (local $sa2 v128) (local $range2 v128) (local $ap2 v128) (local $dir2 v128)
    (local.set $sb2 (f64x2.splat (local.get $sb)))
    (local.set $sa2 (f64x2.splat (local.get $sa)))
    (local.set $range2 (f64x2.splat (local.get $range)))
    (local.set $ap2 (f64x2.splat (local.get $ap)))
    (local.set $dir2 (f64x2.splat (local.get $dir)))
    (local.set $end (i32.add (local.get $out) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $out) (local.get $end)))
        (local.set $xv (v128.load (local.get $x)))
        (local.set $mv (v128.load (local.get $m)))
        (v128.store
          (local.get $out)
          (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
            (f32x4.demote_f64x2_zero
              (f64x2.add
                (f64x2.mul
                  (local.get $ap2)
                  (f64x2.min
                    (f64x2.max
                      (f64x2.sub
                        (f64x2.mul (local.get $sa2) (f64x2.promote_low_f32x4 (local.get $xv)))
                        (f64x2.mul (local.get $sb2) (f64x2.promote_low_f32x4 (local.get $mv))))
                      (f64x2.neg (local.get $range2)))
                    (local.get $range2)))
                (f64x2.mul
                  (local.get $dir2)
                  (f64x2.add
                    (f64x2.mul (local.get $sa2) (f64x2.promote_low_f32x4 (local.get $mv)))
                    (f64x2.mul (local.get $sb2) (f64x2.promote_low_f32x4 (local.get $xv)))))))
            (f32x4.demote_f64x2_zero
              (f64x2.add
                (f64x2.mul
                  (local.get $ap2)
                  (f64x2.min
                    (f64x2.max
                      (f64x2.sub
                        (f64x2.mul
                          (local.get $sa2)
                          (f64x2.promote_low_f32x4
                            (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                              (local.get $xv)
                              (local.get $xv))))
                        (f64x2.mul
                          (local.get $sb2)
                          (f64x2.promote_low_f32x4
                            (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                              (local.get $mv)
                              (local.get $mv)))))
                      (f64x2.neg (local.get $range2)))
                    (local.get $range2)))
                (f64x2.mul
                  (local.get $dir2)
                  (f64x2.add
                    (f64x2.mul
                      (local.get $sa2)
                      (f64x2.promote_low_f32x4
                        (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                          (local.get $mv)
                          (local.get $mv))))
                    (f64x2.mul
                      (local.get $sb2)
                      (f64x2.promote_low_f32x4
                        (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                          (local.get $xv)
                          (local.get $xv))))))))))
        (local.set $x (i32.add (local.get $x) (i32.const 16)))
        (local.set $m (i32.add (local.get $m) (i32.const 16)))
        (local.set $out (i32.add (local.get $out) (i32.const 16)))
        (br $next))))

  ;; LCM's boundary-condition denoiser for ε prediction: x₀ = (x − √β·m)/√α, clipped,
  ;; out = c_out·x₀ + c_skip·x.
  (func (export "lcm_denoise") (param $x i32) (param $m i32) (param $out i32) (param $n i32)
    (param $sb f64) (param $sa f64) (param $range f64) (param $cout f64) (param $cskip f64)
    (local $end i32) (local $xv v128) (local $mv v128) (local $sb2 v128) (local $sa2 v128) (local $range2 v128) (local $cout2 v128) (local $cskip2 v128)
    (local.set $sb2 (f64x2.splat (local.get $sb)))
    (local.set $sa2 (f64x2.splat (local.get $sa)))
    (local.set $range2 (f64x2.splat (local.get $range)))
    (local.set $cout2 (f64x2.splat (local.get $cout)))
    (local.set $cskip2 (f64x2.splat (local.get $cskip)))
    (local.set $end (i32.add (local.get $out) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $out) (local.get $end)))
        (local.set $xv (v128.load (local.get $x)))
        (local.set $mv (v128.load (local.get $m)))
        (v128.store
          (local.get $out)
          (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
            (f32x4.demote_f64x2_zero
              (f64x2.add
                (f64x2.mul
                  (local.get $cout2)
                  (f64x2.min
                    (f64x2.max
                      (f64x2.div
                        (f64x2.sub
                          (f64x2.promote_low_f32x4 (local.get $xv))
                          (f64x2.mul (local.get $sb2) (f64x2.promote_low_f32x4 (local.get $mv))))
                        (local.get $sa2))
                      (f64x2.neg (local.get $range2)))
                    (local.get $range2)))
                (f64x2.mul (local.get $cskip2) (f64x2.promote_low_f32x4 (local.get $xv)))))
            (f32x4.demote_f64x2_zero
              (f64x2.add
                (f64x2.mul
                  (local.get $cout2)
                  (f64x2.min
                    (f64x2.max
                      (f64x2.div
                        (f64x2.sub
                          (f64x2.promote_low_f32x4
                            (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                              (local.get $xv)
                              (local.get $xv)))
                          (f64x2.mul
                            (local.get $sb2)
                            (f64x2.promote_low_f32x4
                              (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                                (local.get $mv)
                                (local.get $mv)))))
                        (local.get $sa2))
                      (f64x2.neg (local.get $range2)))
                    (local.get $range2)))
                (f64x2.mul
                  (local.get $cskip2)
                  (f64x2.promote_low_f32x4
                    (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                      (local.get $xv)
                      (local.get $xv))))))))
        (local.set $x (i32.add (local.get $x) (i32.const 16)))
        (local.set $m (i32.add (local.get $m) (i32.const 16)))
        (local.set $out (i32.add (local.get $out) (i32.const 16)))
        (br $next))))

  ;; out = a·x + b·y (LCM's noise injection).
  (func (export "axpby") (param $x i32) (param $y i32) (param $out i32) (param $n i32)
    (param $a f64) (param $b f64)
    (local $end i32) (local $xv v128) (local $yv v128) (local $a2 v128) (local $b2 v128)
    (local.set $a2 (f64x2.splat (local.get $a)))
    (local.set $b2 (f64x2.splat (local.get $b)))
    (local.set $end (i32.add (local.get $out) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $out) (local.get $end)))
        (local.set $xv (v128.load (local.get $x)))
        (local.set $yv (v128.load (local.get $y)))
        (v128.store
          (local.get $out)
          (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
            (f32x4.demote_f64x2_zero
              (f64x2.add
                (f64x2.mul (local.get $a2) (f64x2.promote_low_f32x4 (local.get $xv)))
                (f64x2.mul (local.get $b2) (f64x2.promote_low_f32x4 (local.get $yv)))))
            (f32x4.demote_f64x2_zero
              (f64x2.add
                (f64x2.mul
                  (local.get $a2)
                  (f64x2.promote_low_f32x4
                    (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                      (local.get $xv)
                      (local.get $xv))))
                (f64x2.mul
                  (local.get $b2)
                  (f64x2.promote_low_f32x4
                    (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                      (local.get $yv)
                      (local.get $yv))))))))
        (local.set $x (i32.add (local.get $x) (i32.const 16)))
        (local.set $y (i32.add (local.get $y) (i32.const 16)))
        (local.set $out (i32.add (local.get $out) (i32.const 16)))
        (br $next))))

  ;; Decoder output → 8-bit RGB as diffusers computes it in numpy float32:
  ;; ((x / 2 + 0.5).clip(0, 1) · 255).round(), rounding half to even; NaN becomes 0 (pmax keeps
  ;; its first operand when a comparison fails). x / 2 and x · 0.5 are the same float32. Three
  ;; planes of n float32 from $r → n interleaved RGB pixels; a turn writes 16 bytes for 12, so
  ;; the output needs 4 bytes of room past its end.
  (func (export "to_rgb8") (param $r i32) (param $out i32) (param $n i32)
    (local $g i32) (local $b i32) (local $end i32) (local $bl v128)
    (local.set $g (i32.add (local.get $r) (i32.shl (local.get $n) (i32.const 2))))
    (local.set $b (i32.add (local.get $g) (i32.shl (local.get $n) (i32.const 2))))
    (local.set $end (local.get $g))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $r) (local.get $end)))
        (local.set $bl
          (i32x4.trunc_sat_f32x4_u
            (f32x4.nearest
              (f32x4.mul
                (f32x4.pmin
                  (f32x4.pmax
                    (f32x4.splat (f32.const 0))
                    (f32x4.add
                      (f32x4.mul (v128.load (local.get $b)) (f32x4.splat (f32.const 0.5)))
                      (f32x4.splat (f32.const 0.5))))
                  (f32x4.splat (f32.const 1)))
                (f32x4.splat (f32.const 255))))))
        ;; [r0 r1 r2 r3 g0 g1 g2 g3 b0 b1 b2 b3 b0 b1 b2 b3] → r0 g0 b0 r1 g1 b1 …
        (v128.store
          (local.get $out)
          (i8x16.shuffle 0 4 8 1 5 9 2 6 10 3 7 11 12 13 14 15
            (i8x16.narrow_i16x8_u
              (i16x8.narrow_i32x4_u
                (i32x4.trunc_sat_f32x4_u
                  (f32x4.nearest
                    (f32x4.mul
                      (f32x4.pmin
                        (f32x4.pmax
                          (f32x4.splat (f32.const 0))
                          (f32x4.add
                            (f32x4.mul (v128.load (local.get $r)) (f32x4.splat (f32.const 0.5)))
                            (f32x4.splat (f32.const 0.5))))
                        (f32x4.splat (f32.const 1)))
                      (f32x4.splat (f32.const 255)))))
                (i32x4.trunc_sat_f32x4_u
                  (f32x4.nearest
                    (f32x4.mul
                      (f32x4.pmin
                        (f32x4.pmax
                          (f32x4.splat (f32.const 0))
                          (f32x4.add
                            (f32x4.mul (v128.load (local.get $g)) (f32x4.splat (f32.const 0.5)))
                            (f32x4.splat (f32.const 0.5))))
                        (f32x4.splat (f32.const 1)))
                      (f32x4.splat (f32.const 255))))))
              (i16x8.narrow_i32x4_u (local.get $bl) (local.get $bl)))
            (local.get $bl)))
        (local.set $r (i32.add (local.get $r) (i32.const 16)))
        (local.set $g (i32.add (local.get $g) (i32.const 16)))
        (local.set $b (i32.add (local.get $b) (i32.const 16)))
        (local.set $out (i32.add (local.get $out) (i32.const 12)))
        (br $next))))
)
