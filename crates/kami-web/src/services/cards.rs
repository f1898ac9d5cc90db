use kami_core::secrets::{Keys, Sealed};
use kami_store::{Order, SealedCard, Store};

use crate::error::ApiError;

pub fn seal_context(product_id: i64) -> String {
    kami_core::secrets::context::card(product_id)
}

/// Opens a delivered order's codes. Only the buyer (access token, query
/// password) and audited operator actions reach this.
pub async fn delivered_codes(
    store: &dyn Store,
    keys: &Keys,
    order: &Order,
) -> Result<Vec<String>, ApiError> {
    let sealed = store.order_cards(order.id).await?;
    sealed.iter().map(|c| open_card(keys, c)).collect()
}

/// Opens one stored code. Callers are the buyer's views above and audited
/// operator actions (reveal, export) only.
pub fn open_card(keys: &Keys, c: &SealedCard) -> Result<String, ApiError> {
    let plain = keys
        .open(
            &seal_context(c.product_id),
            &Sealed {
                ciphertext: c.ciphertext.clone(),
                nonce: c.nonce.clone(),
                key_id: c.key_id,
            },
        )
        .map_err(|e| ApiError::internal(format!("card {}: {e}", c.id)))?;
    String::from_utf8(plain).map_err(|_| ApiError::internal(format!("card {} is not UTF-8", c.id)))
}
