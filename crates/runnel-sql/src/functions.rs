//! Flink SQL functions that DataFusion does not have, registered as DataFusion UDFs so
//! Flink queries run as written.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::compute::kernels::numeric::rem;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::logical_expr::{create_udf, ColumnarValue, ScalarUDF, Volatility};

/// Every Flink compatibility function.
pub fn flink_functions() -> Vec<ScalarUDF> {
    vec![modulo()]
}

/// `MOD(a, b)`: the remainder of integer division (sign of `a`), NULL if either is NULL
/// (or `b` is zero, as in Flink).
fn modulo() -> ScalarUDF {
    create_udf(
        "mod",
        vec![DataType::Int64, DataType::Int64],
        DataType::Int64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let rows = args
                .iter()
                .find_map(|a| match a {
                    ColumnarValue::Array(array) => Some(array.len()),
                    ColumnarValue::Scalar(_) => None,
                })
                .unwrap_or(1);
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let divisor = arrays[1].as_primitive::<Int64Type>();
            // Zero divisors give NULL instead of an error.
            let divisor: ArrayRef =
                Arc::new(divisor.unary_opt::<_, Int64Type>(|d| (d != 0).then_some(d)));
            let result = rem(&arrays[0], &divisor)?;
            if rows == 1 && args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
                return Ok(ColumnarValue::Scalar(
                    datafusion::common::ScalarValue::try_from_array(&result, 0)?,
                ));
            }
            Ok(ColumnarValue::Array(result))
        }),
    )
}
