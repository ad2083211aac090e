//! The default attributes and how each is computed from a purchase.

use crate::event::{EventKind, Purchase};
use compact_str::{CompactString, ToCompactString as _};
use rust_decimal::{Decimal, RoundingStrategy};

/// Where an attribute's value comes from; each has the contract's default name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttributeSource {
    /// `occurred_at` of a sale, UTC to the second.
    LastPurchaseAt,
    /// `store_id` of a sale.
    LastPurchaseStore,
    /// `channel` of a sale.
    LastPurchaseChannel,
    /// `total` of a sale, two fraction digits, half to even.
    LastPurchaseTotal,
    /// `currency` of a sale.
    LastPurchaseCurrency,
    /// Sum of quantities of a sale.
    LastPurchaseItemCount,
    /// Categories of a sale by spend.
    LastPurchaseCategories,
    /// The first of those.
    LastPurchaseTopCategory,
    /// `customer.loyalty_tier`, sale or return.
    LoyaltyTier,
    /// `occurred_at` of a return.
    LastReturnAt,
    /// `store_id` of a return.
    LastReturnStore,
    /// `total` of a return.
    LastReturnTotal,
}

impl AttributeSource {
    /// Every source in the contract's table order.
    pub const ALL: [AttributeSource; 12] = [
        AttributeSource::LastPurchaseAt,
        AttributeSource::LastPurchaseStore,
        AttributeSource::LastPurchaseChannel,
        AttributeSource::LastPurchaseTotal,
        AttributeSource::LastPurchaseCurrency,
        AttributeSource::LastPurchaseItemCount,
        AttributeSource::LastPurchaseCategories,
        AttributeSource::LastPurchaseTopCategory,
        AttributeSource::LoyaltyTier,
        AttributeSource::LastReturnAt,
        AttributeSource::LastReturnStore,
        AttributeSource::LastReturnTotal,
    ];

    /// The contract's attribute name.
    pub fn default_name(self) -> &'static str {
        match self {
            AttributeSource::LastPurchaseAt => "lastPurchaseAt",
            AttributeSource::LastPurchaseStore => "lastPurchaseStore",
            AttributeSource::LastPurchaseChannel => "lastPurchaseChannel",
            AttributeSource::LastPurchaseTotal => "lastPurchaseTotal",
            AttributeSource::LastPurchaseCurrency => "lastPurchaseCurrency",
            AttributeSource::LastPurchaseItemCount => "lastPurchaseItemCount",
            AttributeSource::LastPurchaseCategories => "lastPurchaseCategories",
            AttributeSource::LastPurchaseTopCategory => "lastPurchaseTopCategory",
            AttributeSource::LoyaltyTier => "loyaltyTier",
            AttributeSource::LastReturnAt => "lastReturnAt",
            AttributeSource::LastReturnStore => "lastReturnStore",
            AttributeSource::LastReturnTotal => "lastReturnTotal",
        }
    }

    /// Whether this attribute is derived from events of that kind.
    pub fn applies_to(self, kind: EventKind) -> bool {
        use AttributeSource::*;
        match self {
            LoyaltyTier => true,
            LastReturnAt | LastReturnStore | LastReturnTotal => kind == EventKind::Return,
            _ => kind == EventKind::Sale,
        }
    }

    /// The value for a purchase, `None` when the attribute is absent for it.
    pub fn value(self, purchase: &Purchase) -> Option<CompactString> {
        self.value_ranked(purchase, &mut Ranking::default())
    }

    /// [`value`](Self::value), with the basket's category ranking shared
    /// between the attributes of one event: it is computed at most once.
    pub(super) fn value_ranked<'p>(
        self,
        purchase: &'p Purchase,
        ranking: &mut Ranking<'p>,
    ) -> Option<CompactString> {
        use AttributeSource::*;
        if !self.applies_to(purchase.kind) {
            return None;
        }
        Some(match self {
            LastPurchaseAt | LastReturnAt => purchase.occurred_at.to_utc_second(),
            LastPurchaseStore | LastReturnStore => CompactString::from(purchase.store_id.as_str()),
            LastPurchaseChannel => CompactString::const_new(purchase.channel.as_str()),
            LastPurchaseTotal | LastReturnTotal => render_total(purchase.total),
            LastPurchaseCurrency => CompactString::from(purchase.currency.as_str()),
            LastPurchaseItemCount => purchase
                .items
                .iter()
                .map(|item| u64::from(item.quantity))
                .sum::<u64>()
                .to_compact_string(),
            LastPurchaseCategories => join_categories(ranking.of(purchase))?,
            LastPurchaseTopCategory => CompactString::from(*ranking.of(purchase).first()?),
            LoyaltyTier => CompactString::from(purchase.loyalty_tier.as_deref()?),
        })
    }
}

/// One event's categories ranked by spend, once the first attribute that
/// needs them asks.
#[derive(Debug, Default)]
pub(super) struct Ranking<'p>(Option<Vec<&'p str>>);

impl<'p> Ranking<'p> {
    fn of(&mut self, purchase: &'p Purchase) -> &[&'p str] {
        self.0.get_or_insert_with(|| ranked_categories(purchase))
    }
}

/// An amount with exactly two fraction digits, rounded half to even.
pub fn render_total(total: Decimal) -> CompactString {
    let mut rounded = total.round_dp_with_strategy(2, RoundingStrategy::MidpointNearestEven);
    rounded.rescale(2);
    rounded.to_compact_string()
}

/// Distinct categories by summed line spend, descending, ties by name (code
/// point order), joined with `,` and cut at a category boundary to at most
/// 256 characters. `None` when no item has a category.
pub fn categories_by_spend(purchase: &Purchase) -> Option<CompactString> {
    join_categories(&ranked_categories(purchase))
}

/// Ranked categories joined as [`categories_by_spend`] says.
fn join_categories(ranked: &[&str]) -> Option<CompactString> {
    if ranked.is_empty() {
        return None;
    }
    let mut joined = CompactString::default();
    let mut chars = 0;
    for &category in ranked {
        let extra = category.chars().count() + usize::from(!joined.is_empty());
        if chars + extra > super::MAX_VALUE_CHARS {
            break;
        }
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(category);
        chars += extra;
    }
    Some(joined)
}

/// Distinct categories, most spent first, ties by code point order.
///
/// The lines are sorted by category (stably, so each category's lines are
/// summed in basket order) and each run summed into its first line: no map
/// and no hashing for the handful of lines a basket has, and still
/// `n log n` for the largest basket the schema allows.
pub(super) fn ranked_categories(purchase: &Purchase) -> Vec<&str> {
    let mut spend: Vec<(&str, Decimal)> = purchase
        .items
        .iter()
        .filter_map(|item| {
            let category = item.category.as_deref()?;
            // quantity ≤ 10^4, price < 10^15 with 6 decimals, ≤ 1000 lines:
            // at most 28 significant digits, within Decimal's 96-bit mantissa.
            let line = item
                .unit_price
                .checked_mul(Decimal::from(item.quantity))
                .unwrap_or(Decimal::MAX);
            Some((category, line))
        })
        .collect();
    // Rust orders `str` by bytes, and UTF-8 byte order is code point order.
    spend.sort_by(|a, b| a.0.cmp(b.0));
    spend.dedup_by(|line, sum| {
        let same = line.0 == sum.0;
        if same {
            sum.1 = sum.1.checked_add(line.1).unwrap_or(Decimal::MAX);
        }
        same
    });
    // Stable: equal spends stay in code point order.
    spend.sort_by_key(|(_, sum)| std::cmp::Reverse(*sum));
    spend.into_iter().map(|(category, _)| category).collect()
}

/// At most `max` characters of `value`, never cutting inside a character.
pub fn truncate_chars(mut value: CompactString, max: usize) -> CompactString {
    if value.len() > max {
        if let Some((at, _)) = value.char_indices().nth(max) {
            value.truncate(at);
        }
    }
    value
}
