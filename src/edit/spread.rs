//! The MEMIT family's spread of one residual over several layers (spec §3.1), shared by MEMIT,
//! PMET and AlphaEdit. With targets `z_i` at the last edited layer L*, for each edited layer j in
//! increasing order:
//!
//! ```text
//! K_j = keys of the requests at layer j        (on the model with layers < j already updated)
//! R_j = [z_i − o_i(current)] / spread(L − j)   (o: output read at L*, e.g. the block output)
//! W_j ← W_j + Δ_j,   Δ_j = solve_j(K_j, R_j)   (the method's closed form)
//! ```
//! The updates are computed on the live model (later layers' keys and outputs must see the
//! earlier layers' updates) and the weights are put back before returning, so the caller installs
//! them through the safety gate (`commit_updates`) or not at all.

use candle_core::Tensor;
use faer::Mat;

use super::keys::{bare_activations, request_keys, KeyAverage};
use super::linalg::{mat_from_columns, tensor_from_mat};
use super::templates::ContextTemplates;
use super::{restore_weights, EditControl, EditRequest, Phase, Progress, Stopwatch, Timings};
use crate::error::Result;
use crate::model::{Model, Site};

/// Where the residual is read and how it is shared out.
pub struct Spread<'a> {
    /// The edited layers, in increasing order.
    pub layers: &'a [usize],
    /// The output at L* that the targets `z_i` are compared with.
    pub output: (usize, Site),
    /// The divisor of the residual for `L − j` layers still to come (MEMIT: `L − j`, PMET: its
    /// square root).
    pub divisor: fn(usize) -> f64,
}

/// Keys and residuals, and the timings of each phase, for every edited layer in turn; `solve`
/// gets the layer's index j, its keys `K_j: [d_in, n]` and residuals `R_j: [d_out, n]`, and
/// returns `Δ_j: [d_out, d_in]`. Returns the new weight of each layer; the model itself is left
/// as it was, also on error.
#[allow(clippy::too_many_arguments)]
pub fn spread_updates(
    model: &mut Model,
    requests: &[EditRequest],
    templates: &ContextTemplates,
    spread: &Spread,
    targets: &[Vec<f64>],
    ctl: &EditControl,
    (timer, timings): (&mut Stopwatch, &mut Timings),
    mut solve: impl FnMut(usize, &Mat<f64>, &Mat<f64>) -> Result<Mat<f64>>,
) -> Result<Vec<(usize, Tensor)>> {
    let before: Vec<(usize, Tensor)> = spread
        .layers
        .iter()
        .map(|&l| Ok((l, model.edit_weight(l)?.clone())))
        .collect::<Result<_>>()?;
    let updated = (|| -> Result<Vec<(usize, Tensor)>> {
        let mut out = Vec::new();
        for (j, &layer) in spread.layers.iter().enumerate() {
            ctl.check()?;
            ctl.report(Progress::Phase(Phase::Keys));
            let keys = request_keys(model, requests, templates, &[layer], KeyAverage::GroupMeans)?;
            let k = mat_from_columns(&keys.iter().map(|x| x[0].clone()).collect::<Vec<_>>());
            let current = bare_activations(model, requests, &[spread.output])?.remove(0);
            let divisor = (spread.divisor)(spread.layers.len() - j);
            let r = mat_from_columns(
                &targets
                    .iter()
                    .zip(&current)
                    .map(|(z, o)| z.iter().zip(o).map(|(a, b)| (a - b) / divisor).collect())
                    .collect::<Vec<Vec<f64>>>(),
            );
            timings.keys += timer.lap();
            ctl.report(Progress::Phase(Phase::Solve));
            let delta = solve(j, &k, &r)?;
            let w =
                (model.edit_weight_f32(layer)? + tensor_from_mat(delta.as_ref(), &model.device)?)?;
            model.set_edit_weight(layer, w.clone())?;
            out.push((layer, w));
            timings.solve += timer.lap();
        }
        Ok(out)
    })();
    restore_weights(model, &before)?;
    updated
}
