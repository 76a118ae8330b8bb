//! `#[derive(FromRow)]` for the TrueValue guest SDK. Use it through `truevalue_sdk::prelude`;
//! the generated code names the SDK as `::truevalue_sdk`, so a component depends on that crate.

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::quote;
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, LitStr, parse_macro_input};

/// Reads a struct with named fields from a database row: each field from the column of the
/// same name (`r#type` reads `type`), or the one `#[row(rename = "column")]` names. A column
/// that is missing or of the wrong type is a `db::Error::Invalid` naming it.
#[proc_macro_derive(FromRow, attributes(row))]
pub fn derive_from_row(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

fn expand(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let fields = match &input.data {
        Data::Struct(data) => match &data.fields {
            Fields::Named(named) => &named.named,
            Fields::Unnamed(_) => {
                return Err(syn::Error::new(
                    input.ident.span(),
                    "#[derive(FromRow)] needs a struct with named fields: columns are read by \
                     field name, so a tuple struct has nothing to match them with",
                ));
            }
            Fields::Unit => {
                return Err(syn::Error::new(
                    input.ident.span(),
                    "#[derive(FromRow)] needs a struct with named fields, one per column",
                ));
            }
        },
        Data::Enum(_) => {
            return Err(syn::Error::new(
                input.ident.span(),
                "#[derive(FromRow)] works on structs with named fields, not on enums: read the \
                 columns into a struct, or implement `FromRow` by hand",
            ));
        }
        Data::Union(_) => {
            return Err(syn::Error::new(
                input.ident.span(),
                "#[derive(FromRow)] works on structs with named fields, not on unions",
            ));
        }
    };
    let mut reads = Vec::with_capacity(fields.len());
    for field in fields {
        let Some(ident) = &field.ident else {
            return Err(syn::Error::new(field.span(), "a field without a name"));
        };
        let column = column_name(field)?
            .unwrap_or_else(|| LitStr::new(&ident.unraw().to_string(), Span::call_site()));
        reads.push(quote! { #ident: row.get(#column)? });
    }
    let name = &input.ident;
    let (impl_generics, type_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        impl #impl_generics ::truevalue_sdk::db::FromRow for #name #type_generics #where_clause {
            fn from_row(
                row: &::truevalue_sdk::db::Row,
            ) -> ::core::result::Result<Self, ::truevalue_sdk::db::Error> {
                ::core::result::Result::Ok(Self { #(#reads),* })
            }
        }
    })
}

/// The column of `#[row(rename = "...")]`, if the field has one.
fn column_name(field: &syn::Field) -> syn::Result<Option<LitStr>> {
    let mut column = None;
    for attr in field.attrs.iter().filter(|a| a.path().is_ident("row")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("rename") {
                let name: LitStr = meta.value()?.parse()?;
                if name.value().is_empty() {
                    return Err(meta.error("the column name must not be empty"));
                }
                column = Some(name);
                Ok(())
            } else {
                Err(meta.error("unknown `row` attribute: the one there is `rename = \"column\"`"))
            }
        })?;
    }
    Ok(column)
}
