use candle_core::{Device, Tensor};
fn t(f: impl Fn()) -> f64 { f(); let s = std::time::Instant::now(); for _ in 0..20 { f(); } s.elapsed().as_secs_f64() / 20.0 * 1000.0 }
fn main() {
    let d = Device::Cpu;
    // Many distinct weights so nothing stays in cache (like a real forward).
    for (m, k, n) in [(14usize, 576usize, 1536usize), (14, 1536, 576), (7, 576, 49152), (32, 576, 1536), (64, 576, 1536)] {
        let reps = (200_000_000 / (n * k * 4)).max(1);
        let x = Tensor::randn(0f32, 1.0, (m, k), &d).unwrap();
        let ws: Vec<Tensor> = (0..reps).map(|_| Tensor::randn(0f32, 1.0, (n, k), &d).unwrap()).collect();
        let g = Tensor::randn(0f32, 1.0, (m, n), &d).unwrap();
        let per = |f: &dyn Fn(&Tensor)| t(|| for w in &ws { f(w) }) / reps as f64;
        let a = per(&|w| { x.matmul(&w.t().unwrap()).unwrap(); });
        let c = per(&|w| { w.matmul(&x.t().unwrap()).unwrap().t().unwrap().contiguous().unwrap(); });
        let b = per(&|w| { g.matmul(w).unwrap(); });
        let e = per(&|w| { w.t().unwrap().matmul(&g.t().unwrap()).unwrap().t().unwrap().contiguous().unwrap(); });
        println!("M={m} K={k} N={n}: fwd x·Wᵀ {a:.3} | (W·xᵀ)ᵀ {c:.3} ms ;; bwd g·W {b:.3} | (Wᵀ·gᵀ)ᵀ {e:.3} ms");
    }
}
