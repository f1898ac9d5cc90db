use kami_core::secrets::{Keys, Sealed};
use kami_store::{Order, Store};

use crate::error::ApiError;

pub fn seal_context(product_id: i64) -> String {
    format!("card:{product_id}")
}

/// Opens a delivered order's codes. Only the buyer (access token, query
/// password) and audited operator actions reach this.
pub async fn delivered_codes(
    store: &dyn Store,
    keys: &Keys,
    order: &Order,
) -> Result<Vec<String>, ApiError> {
    let sealed = store.order_cards(order.id).await?;
    sealed
        .into_iter()
        .map(|c| {
            let plain = keys
                .open(
                    &seal_context(c.product_id),
                    &Sealed {
                        ciphertext: c.ciphertext,
                        nonce: c.nonce,
                        key_id: c.key_id,
                    },
                )
                .map_err(|e| {
                    ApiError::internal(format!("card {} of order {}: {e}", c.id, order.order_no))
                })?;
            String::from_utf8(plain)
                .map_err(|_| ApiError::internal(format!("card {} is not UTF-8", c.id)))
        })
        .collect()
}
