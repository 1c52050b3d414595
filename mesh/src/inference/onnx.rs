//! ONNX Runtime, shared by the models that run on it: one environment per process, opened at run
//! time from the library the `onnxruntime` wheel carries (`models::catalog::onnx_runtime`), and
//! one session per graph. [`Network::run`] takes one f32 input and gives the first output;
//! [`Network::run_named`] takes named f32/i64/bool inputs and gives the outputs asked for by name
//! (decoders with a key/value cache need both).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use super::BackendError;

/// A tensor for a network: its shape and values (row-major f32).
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Its dimensions.
    pub shape: Vec<usize>,
    /// Its values, row-major.
    pub data: Vec<f32>,
}

/// The values of one named input, borrowed: the element types the project's graphs take.
#[derive(Debug, Clone, Copy)]
pub enum Values<'a> {
    /// 32-bit floats.
    F32(&'a [f32]),
    /// 64-bit integers (token ids).
    I64(&'a [i64]),
    /// Booleans (branch flags).
    Bool(&'a [bool]),
}

impl Values<'_> {
    fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::I64(v) => v.len(),
            Self::Bool(v) => v.len(),
        }
    }
}

/// One named input of [`Network::run_named`]: its name in the graph, shape and values.
#[derive(Debug, Clone)]
pub struct NamedInput<'a> {
    /// The graph's name for it.
    pub name: &'a str,
    /// Its dimensions (a zero dimension makes an empty tensor, e.g. an empty key/value cache).
    pub shape: Vec<usize>,
    /// Its values, row-major; as many as the shape holds.
    pub values: Values<'a>,
}

/// One input the graph declares: its name and dimensions (`None` where symbolic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputInfo {
    /// The graph's name for it.
    pub name: String,
    /// Its dimensions as declared, `None` for a symbolic (dynamic) one.
    pub shape: Vec<Option<usize>>,
}

/// The process's ONNX Runtime environment, opened once from `library`.
fn environment(library: &Path) -> Result<ort::environment::Environment, BackendError> {
    static ENVIRONMENT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();
    ENVIRONMENT
        .get_or_init(|| {
            ort::init_from(library)
                .map_err(|e| e.to_string())?
                .with_name("ganglion")
                .build()
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|message| BackendError::Load {
            path: library.to_owned(),
            message: format!("ONNX Runtime: {message}"),
        })
}

/// One ONNX graph in a session. ONNX Runtime runs a session once at a time through this API
/// (`run` takes it mutably); the operators inside it use every core.
pub struct Network {
    session: Mutex<ort::session::Session>,
    path: PathBuf,
}

impl Network {
    /// Opens the graph at `path` in a session of the environment of `library`, its operators
    /// on `threads` threads.
    pub fn load(library: &Path, path: &Path, threads: usize) -> Result<Self, BackendError> {
        let failed = |message: String| BackendError::Load {
            path: path.to_owned(),
            message,
        };
        let environment = environment(library)?;
        let session = ort::session::Session::builder(&environment)
            .map_err(|e| failed(e.to_string()))?
            .with_intra_threads(threads)
            .map_err(|e| failed(e.to_string()))?
            // Threads that spin while waiting for work would take the cores the node and the
            // other models share.
            .with_intra_op_spinning(false)
            .map_err(|e| failed(e.to_string()))?
            .commit_from_file(path)
            .map_err(|e| failed(e.to_string()))?;
        Ok(Self {
            session: Mutex::new(session),
            path: path.to_owned(),
        })
    }

    /// A custom metadata value of the model (e.g. its labels).
    pub fn metadata(&self, key: &str) -> Option<String> {
        let session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        session.metadata().ok()?.custom(key)
    }

    /// The graph's declared inputs, in order.
    pub fn inputs(&self) -> Vec<InputInfo> {
        let session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        session
            .inputs()
            .iter()
            .map(|outlet| InputInfo {
                name: outlet.name().to_owned(),
                shape: outlet
                    .dtype()
                    .tensor_shape()
                    .map(|shape| shape.iter().map(|d| usize::try_from(*d).ok()).collect())
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// Runs the graph on named inputs and returns the outputs named in `outputs`, in that order,
    /// each copied out as an f32 tensor. Errors (never panics) when a shape does not match its
    /// values, a name is empty or unknown, or an asked output is not f32. Outputs not asked for
    /// are dropped uncopied.
    pub fn run_named(
        &self,
        inputs: &[NamedInput<'_>],
        outputs: &[&str],
    ) -> Result<Vec<Tensor>, BackendError> {
        let path = self.path.display();
        let failed = |e: ort::Error| BackendError::Run(format!("{path}: {e}"));
        let mut values: Vec<(
            std::borrow::Cow<'_, str>,
            ort::session::SessionInputValue<'_>,
        )> = Vec::with_capacity(inputs.len());
        for input in inputs {
            // ort asserts (panics) on empty names when looking outputs up; refuse them here too.
            let elements = input
                .shape
                .iter()
                .try_fold(1_usize, |n, d| n.checked_mul(*d));
            if input.name.is_empty() || elements != Some(input.values.len()) {
                return Err(BackendError::Run(format!(
                    "{path}: input {:?} has shape {:?} but {} values",
                    input.name,
                    input.shape,
                    input.values.len()
                )));
            }
            let shape = input.shape.clone();
            let value: ort::session::SessionInputValue<'_> = match input.values {
                Values::F32(v) => ort::value::TensorRef::from_array_view((shape, v))
                    .map_err(failed)?
                    .into(),
                Values::I64(v) => ort::value::TensorRef::from_array_view((shape, v))
                    .map_err(failed)?
                    .into(),
                Values::Bool(v) => ort::value::TensorRef::from_array_view((shape, v))
                    .map_err(failed)?
                    .into(),
            };
            values.push((input.name.into(), value));
        }
        if let Some(name) = outputs.iter().find(|name| name.is_empty()) {
            return Err(BackendError::Run(format!("{path}: output name {name:?}")));
        }
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let results = session.run(values).map_err(failed)?;
        outputs
            .iter()
            .map(|name| {
                let value = results
                    .get(name)
                    .ok_or_else(|| BackendError::Run(format!("{path}: no output {name:?}")))?;
                let (shape, data) = value.try_extract_tensor::<f32>().map_err(failed)?;
                Ok(Tensor {
                    shape: shape
                        .iter()
                        .map(|d| usize::try_from(*d).unwrap_or(0))
                        .collect(),
                    data: data.to_vec(),
                })
            })
            .collect()
    }

    /// Runs the graph on one input; its first output's shape and values.
    pub fn run(&self, input: &Tensor) -> Result<(Vec<usize>, Vec<f32>), BackendError> {
        let failed = |e: ort::Error| BackendError::Run(format!("{}: {e}", self.path.display()));
        let tensor =
            ort::value::TensorRef::from_array_view((input.shape.clone(), input.data.as_slice()))
                .map_err(failed)?;
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let outputs = session.run(ort::inputs![tensor]).map_err(failed)?;
        let (shape, values) = outputs[0].try_extract_tensor::<f32>().map_err(failed)?;
        let shape = shape
            .iter()
            .map(|d| usize::try_from(*d).unwrap_or(0))
            .collect();
        Ok((shape, values.to_vec()))
    }
}
