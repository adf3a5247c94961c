use super::gguf::unpermute_rows;
use super::*;

#[test]
fn spec_parsing() {
    assert_eq!(
        ModelSpec::parse("default", None).unwrap(),
        ModelSpec::Default
    );
    assert_eq!(
        ModelSpec::parse("gpt2-xl", None).unwrap(),
        ModelSpec::Hub {
            repo: "openai-community/gpt2-xl".into(),
            revision: None
        }
    );
    assert_eq!(
        ModelSpec::parse("HuggingFaceTB/SmolLM2-135M", Some("main".into())).unwrap(),
        ModelSpec::Hub {
            repo: "HuggingFaceTB/SmolLM2-135M".into(),
            revision: Some("main".into())
        }
    );
    assert!(ModelSpec::parse("./missing.gguf", None).is_err());
    assert!(ModelSpec::parse("no spaces allowed/x y", None).is_err());
    assert!(ModelSpec::parse("llama", None).is_err());
}

#[test]
fn unpermute_inverts_llama_cpp_permute() {
    // llama.cpp: w.reshape(n_head, 2, hd/2, in).swapaxes(1, 2)
    let (n_heads, hd, d_in) = (2usize, 4usize, 3usize);
    let hf = Tensor::arange(0f32, (n_heads * hd * d_in) as f32, &Device::Cpu)
        .unwrap()
        .reshape((n_heads * hd, d_in))
        .unwrap();
    let permuted = hf
        .reshape((n_heads, 2, hd / 2, d_in))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap()
        .reshape((n_heads * hd, d_in))
        .unwrap();
    let back = unpermute_rows(&permuted, n_heads).unwrap();
    assert_eq!(back.to_vec2::<f32>().unwrap(), hf.to_vec2::<f32>().unwrap());
}
